"""Time from a stored `connection.connected` to the recorded partner expense connection.

Both instants are the processor's own (`receivedAt` of the webhook, and of the event recording
Codat's answer), read from the status documents after onboarding N companies one at a time
against the local stand-in for Codat.
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from processor import clock
from processor.codat.client import basic_auth
from processor.sandbox import SandboxServer
from processor.sandbox.sender import generate_secret


def measure(companies: int = 50) -> list[float]:
    api_key, secret, token = secrets.token_hex(8), generate_secret(), secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="codat-bench-") as folder:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with SandboxServer(
            api_key=api_key, webhook_url=f"{url}/webhooks/codat", secrets=[secret]
        ) as sandbox:
            env = {
                **os.environ,
                "CODAT_API_KEY": api_key,
                "CODAT_BASE_URL": sandbox.url,
                "CODAT_WEBHOOK_SECRET": secret,
                "DATABASE_URL": f"sqlite:///{Path(folder) / 'p.db'}",
                "STATUS_API_TOKEN": token,
            }
            command = [sys.executable, "-m", "processor", "serve", "--port", str(port)]
            serve = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
            try:
                return _run(sandbox.url, api_key, url, token, companies)
            finally:
                serve.terminate()
                serve.wait(15)


def _run(codat_url: str, api_key: str, url: str, token: str, companies: int) -> list[float]:
    codat = httpx.Client(base_url=codat_url, headers={"Authorization": basic_auth(api_key)})
    status = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
    latencies = []
    with codat, status:
        _wait(lambda: status.get("/healthz").status_code == 200)
        for n in range(companies):
            company = codat.post("/companies", json={"name": f"Bench {n}"}).json()
            connection = codat.post(
                f"/companies/{company['id']}/connections", json={"platformKey": "gbol"}
            ).json()
            codat.post(
                f"/_sandbox/companies/{company['id']}/connections/{connection['id']}/authorize"
            )

            def ready(company_id: str = company["id"]) -> dict[str, Any] | None:
                answer = status.get(f"/companies/{company_id}")
                document = answer.json() if answer.status_code == 200 else None
                return document if document and document["state"] == "ready" else None

            document = _wait(ready)
            received = {e["eventType"]: e["receivedAt"] for e in document["events"]}
            delta = clock.parse(received["partnerExpenseConnection.created"]) - clock.parse(
                received["connection.connected"]
            )
            latencies.append(delta.total_seconds() * 1000)
    return latencies


def _wait(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except httpx.TransportError:
            found = None
        if found:
            return found
        time.sleep(0.01)
    raise SystemExit("timed out waiting for serve")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def report(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"connection.connected -> partner expense connection recorded, {len(ordered)} companies: "
        f"median {statistics.median(ordered):.1f} ms, p90 {p90:.1f} ms, max {ordered[-1]:.1f} ms"
    )

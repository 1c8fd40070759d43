"""Benchmark 4: N companies onboarding at once against the local stand-in for Codat.

The stand-in runs in this process (a thread), with a fault rule adding 1 ms to every Codat call
(`POST /_sandbox/faults`, path `/companies*`, delay 0.001 s). `serve` runs as its own process on
SQLite. First every company is created with a `PendingAuth` accounting connection and the bench
waits until `serve` has them all `pending_auth`; then every connection is authorized at once, in
one step of the stand-in's own event loop (what its admin endpoint does, without an HTTP client in
this process competing for the stand-in's GIL: 500 concurrent admin calls through one httpx pool
had cost this process 6-7 s of CPU). Two instants are taken on one clock, in this process:
when the stand-in's webhook sender gets the 2xx for a company's `connection.connected` (an httpx
response hook on the stand-in's client), and when the stand-in has created that company's partner
expense connection (its `create_partner_expense`, wrapped). The latency is the difference; every
company must end `ready` with exactly one partner expense connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.serving import free_port, stop
from processor.codat.client import basic_auth
from processor.sandbox import SandboxServer
from processor.sandbox.sender import generate_secret

DELAY_SECONDS = 0.001


def measure(folder: Path, companies: int) -> dict[str, Any]:
    api_key, secret = secrets.token_hex(8), generate_secret()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database = folder / "endtoend.db"
    connected: dict[str, float] = {}
    created: dict[str, float] = {}
    with SandboxServer(
        api_key=api_key, webhook_url=f"{url}/webhooks/codat", secrets=[secret]
    ) as server:
        sandbox = server.sandbox
        _instrument(sandbox, connected, created)
        env = {
            **os.environ,
            "CODAT_API_KEY": api_key,
            "CODAT_BASE_URL": server.url,
            "CODAT_WEBHOOK_SECRET": secret,
            "DATABASE_URL": f"sqlite:///{database}",
            "RECONCILE_INTERVAL_SECONDS": "0",
        }
        command = [sys.executable, "-m", "processor", "serve", "--port", str(port)]
        log = (folder / "endtoend.log").open("ab")
        serve = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, "serve")
            with httpx.Client(
                base_url=server.url, headers={"Authorization": basic_auth(api_key)}, timeout=30
            ) as codat:
                answer = codat.post(
                    "/_sandbox/faults",
                    json=[{"path": "/companies*", "delay": DELAY_SECONDS, "forSeconds": 3600}],
                )
                answer.raise_for_status()
                pairs = [_create(codat, n) for n in range(companies)]
            _wait(lambda: _count(database, "pending_auth") == companies, "pending_auth")
            started = time.monotonic()
            _authorize_all(sandbox, pairs)
            _wait(lambda: _count(database, "ready") == companies, "ready", timeout=120)
            wall = time.monotonic() - started
        finally:
            stop(serve)
        partners = [
            sum(c["sourceType"] == "Expense" for c in record.connections.values())
            for record in sandbox.companies.values()
        ]
    latencies = sorted((created[c] - connected[c]) * 1000 for c, _ in pairs)
    return {
        "method": (
            f"{companies} companies created PendingAuth, then all authorized at once "
            "(one step of the stand-in's loop); stand-in in-process with 1 ms added per Codat "
            "call; serve on SQLite; latency from the 2xx of connection.connected (stand-in's "
            "sender) to the partner expense connection created at the stand-in"
        ),
        "companies": companies,
        "ready": _count(database, "ready"),
        "one_partner_connection_each": all(n == 1 for n in partners),
        "p50_ms": statistics.median(latencies),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1],
        "all_ready_after_s": wall,
    }


def _instrument(sandbox: Any, connected: dict[str, float], created: dict[str, float]) -> None:
    """Time-stamp the 2xx of each `connection.connected` and each partner connection's creation."""

    async def on_response(response: httpx.Response) -> None:
        body = response.request.content
        if response.is_success and b'"connection.connected"' in body:
            company = json.loads(body)["payload"]["referenceCompany"]["id"]
            connected.setdefault(company, time.monotonic())

    _wait(lambda: sandbox.http is not None, "the stand-in's client")
    sandbox.http.event_hooks["response"].append(on_response)
    original = sandbox.create_partner_expense

    def create_partner_expense(record: Any) -> Any:
        connection = original(record)
        created.setdefault(record.company["id"], time.monotonic())
        return connection

    sandbox.create_partner_expense = create_partner_expense


def _create(codat: httpx.Client, n: int) -> tuple[str, str]:
    company = codat.post("/companies", json={"name": f"Bench {n}"}).json()
    connection = codat.post(
        f"/companies/{company['id']}/connections", json={"platformKey": "gbol"}
    ).json()
    return company["id"], connection["id"]


def _authorize_all(sandbox: Any, pairs: list[tuple[str, str]]) -> None:
    """Every customer authorizes at once: one step of the stand-in's own loop authorizes every
    connection (what its admin endpoint does), and its webhooks go out from there."""

    async def authorize() -> None:
        for company, connection in pairs:
            record = sandbox.company(company)
            sandbox.authorize(record, sandbox.connection(record, connection))

    asyncio.run_coroutine_threadsafe(authorize(), sandbox.loop).result(timeout=60)


def _count(database: Path, state: str) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as conn:
            sql = "SELECT COUNT(*) FROM companies WHERE state = ?"
            return int(conn.execute(sql, [state]).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"end to end: timed out waiting for {what}")


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]

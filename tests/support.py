"""Test support: a real `serve` process on loopback, signed requests, and polling."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from processor.sender import sign_headers
from store import Store, StoredEvent

T = TypeVar("T")
TOKEN = "test-status-token-0123456789"
API_KEY = "test-api-key-abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)
        last = predicate()
    return last


class ServeProcess:
    """`codat-expenses serve` as a real process, which tests may kill and restart."""

    def __init__(self, database: Path, env: dict[str, str], port: int | None = None) -> None:
        self.database = database
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{database}",
            "STATUS_API_TOKEN": TOKEN,
            "RETRY_INITIAL_SECONDS": "0.05",
            "RETRY_MAX_SECONDS": "0.5",
            "CODAT_TIMEOUT_SECONDS": "2",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = database.with_suffix(".serve.log")

    def start(self) -> ServeProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "processor", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, timeout=20, what=f"serve on {self.url} (log: {self.log})")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}: {self.logs()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def company(self, company_id: str) -> dict[str, Any] | None:
        answer = httpx.get(
            f"{self.url}/companies/{company_id}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return dict(answer.json())

    def state_of(self, company_id: str) -> str | None:
        document = self.company(company_id)
        return document["state"] if document else None

    def wait_state(self, company_id: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            document = self.company(company_id)
            if document and document["state"] == state and not document["pending"]:
                return document
            return None

        return wait_for(reached, timeout, what=f"company {company_id} to be {state}")

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def post_webhook(
    url: str,
    body: bytes | dict[str, Any],
    secret: str | list[str],
    *,
    message_id: str,
    timestamp: int | None = None,
    prefix: str = "webhook",
    client: httpx.Client | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = sign_headers(secret, message_id, raw, timestamp=timestamp, prefix=prefix)
    sender = client or httpx
    return sender.post(f"{url}/webhooks/codat", content=raw, headers=headers, timeout=10)


def partner_connections(sandbox_state: dict[str, Any], company_id: str) -> list[dict[str, Any]]:
    """The partner expense connections Codat (the stand-in) holds for a company."""
    found = [c for c in sandbox_state["companies"] if c["id"] == company_id]
    if not found:
        raise AssertionError(f"the stand-in has no company {company_id}")
    company = found[0]
    return [
        c for c in company["connections"] if c.get("sourceType") == "Expense" and not c["deleted"]
    ]


def events(server: ServeProcess, event_or_message_id: str) -> list[StoredEvent]:
    """The stored events with this event id or webhook message id, read without writing."""
    store = Store.open(server.database, readonly=True)
    try:
        return store.find_events(event_or_message_id=event_or_message_id)
    finally:
        store.close()


def event_count(server: ServeProcess) -> int:
    store = Store.open(server.database, readonly=True)
    try:
        return store.count_events()
    finally:
        store.close()


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """The answer is `status` with a JSON `{"error": ...}` body naming every fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    for fragment in fragments:
        assert fragment in body["error"], body
    return str(body["error"])

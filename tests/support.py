"""Test support: a real `serve` (a process, or a thread) on loopback, signed requests, polling."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from processor import config
from processor.app import create_app
from processor.sandbox.sender import sign_headers
from store import Store, StoredEvent, open_store
from store.sqlite import SqliteStore

T = TypeVar("T")
TOKEN = "test-status-token-0123456789"
API_KEY = "test-api-key-abcdef"
BACKENDS = ("sqlite", "postgres")  # the store backends tests can run on


def open_db(path: str | Path, *, readonly: bool = False, timeout: float = 5.0) -> Store:
    """The SQLite store at `path`, opened through the contract (`open_store` and its URL)."""
    return open_store(f"sqlite:///{path}", readonly=readonly, timeout=timeout)


def open_sqlite(path: str | Path, *, readonly: bool = False, timeout: float = 5.0) -> SqliteStore:
    """`open_db`, for the tests that look at SQLite itself (its rows, pragmas and files)."""
    store = open_db(path, readonly=readonly, timeout=timeout)
    assert isinstance(store, SqliteStore), store
    return store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Poll until `predicate()` is truthy: its value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)
        last = predicate()
    return last


class Serve:
    """What tests ask of a running `serve`, however it runs: its URL, database and documents.

    `database` is the SQLite file, unless `database_url` names another store (PostgreSQL);
    the file's folder then still holds the log."""

    def __init__(
        self,
        database: Path,
        env: dict[str, str],
        port: int | None = None,
        *,
        database_url: str | None = None,
    ) -> None:
        self.database = database
        self.database_url = database_url or f"sqlite:///{database}"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "STATUS_API_TOKEN": TOKEN,
            "RETRY_INITIAL_SECONDS": "0.05",
            "RETRY_MAX_SECONDS": "0.5",
            "CODAT_TIMEOUT_SECONDS": "2",
            **env,
        }

    def open_store(self, *, readonly: bool = True) -> Store:
        """The store `serve` writes to, whichever backend it is."""
        return open_store(self.database_url, readonly=readonly)

    def start(self) -> Serve:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def logs(self) -> str:
        raise NotImplementedError

    def _alive(self) -> None:
        """Fail at once, with the logs, if `serve` has stopped."""

    def _healthy(self) -> bool:
        self._alive()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

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

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServeProcess(Serve):
    """`codat-expenses serve` as a real process, which tests may kill and restart."""

    def __init__(
        self,
        database: Path,
        env: dict[str, str],
        port: int | None = None,
        *,
        database_url: str | None = None,
    ) -> None:
        super().__init__(database, env, port, database_url=database_url)
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

    def _alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}: {self.logs()}")

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

    def __enter__(self) -> ServeProcess:
        return self.start()


class ServeThread(Serve):
    """The real app, worker and sweep under uvicorn in a thread of the test process.

    Real loopback HTTP and a real SQLite file, without starting an interpreter: for tests that
    neither kill `serve` nor test the command line. Its log is the `processor` loggers' lines.
    """

    def __init__(
        self,
        database: Path,
        env: dict[str, str],
        port: int | None = None,
        *,
        database_url: str | None = None,
    ) -> None:
        super().__init__(database, env, port, database_url=database_url)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.lines: list[str] = []
        self._handler = _ListHandler(self.lines)

    def start(self) -> ServeThread:
        settings = config.load(self.env)
        open_store(settings.database_url).close()  # as `serve` does before binding
        app = create_app(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                access_log=False,
                log_config=None,
                timeout_graceful_shutdown=10,
            )
        )
        logger = logging.getLogger("processor")
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)
        self.thread = threading.Thread(target=self.server.run, name=f"serve-{self.port}")
        self.thread.start()
        wait_for(self._healthy, timeout=20, what=f"serve on {self.url}: {self.logs()}")
        return self

    def _alive(self) -> None:
        if self.thread is not None and not self.thread.is_alive():
            raise AssertionError(f"serve's thread ended: {self.logs()}")

    def kill(self) -> None:
        raise AssertionError("serve in a thread cannot be killed: use ServeProcess")

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(20)
            assert not self.thread.is_alive(), "serve's thread did not stop in 20 s"
        logging.getLogger("processor").removeHandler(self._handler)

    def logs(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> ServeThread:
        return self.start()


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


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


def events(server: Serve, event_or_message_id: str) -> list[StoredEvent]:
    """The stored events with this event id or webhook message id, read without writing."""
    store = server.open_store()
    try:
        return store.find_events(event_or_message_id=event_or_message_id)
    finally:
        store.close()


def event_count(server: Serve) -> int:
    store = server.open_store()
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

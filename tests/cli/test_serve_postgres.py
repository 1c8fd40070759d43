"""`serve` and a PostgreSQL server that is not there yet: it waits a bounded time, then stops
with one line naming the server (never the password), or starts once the server is up."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.sandbox.sender import generate_secret
from tests.pg_server import PostgresServer, running_server
from tests.support import API_KEY, ServeProcess, free_port

PASSWORD = "n0t-in-any-log"


def serve_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": generate_secret(),
        "DATABASE_URL": url,
        **extra,
    }


def test_an_unreachable_server_stops_start_up_after_the_connect_timeout() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/expenses?sslmode=disable"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "processor", "serve", "--port", str(free_port())],
        env=serve_env(url, DATABASE_CONNECT_TIMEOUT_SECONDS="2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - began
    assert done.returncode == 2, done
    assert 1.5 <= took <= 15, took
    errors = [line for line in done.stderr.splitlines() if line.startswith("codat-expenses: ")]
    assert len(errors) == 1, done.stderr
    assert f"postgresql://app:***@127.0.0.1:{port}/expenses" in errors[0], errors
    assert "tried for" in errors[0], errors
    assert PASSWORD not in done.stdout + done.stderr


@pytest.fixture
def stopped_server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A server of this test's own, with one database, then stopped."""
    with running_server() as server:
        yield server


def test_serve_waits_for_a_server_that_comes_up(
    stopped_server: PostgresServer, tmp_path: Path
) -> None:
    with stopped_server.fresh_database() as url:
        stopped_server.stop()
        log = (tmp_path / "x.db").with_suffix(".serve.log")

        def start_once_serve_waits() -> None:
            # The server comes up only once serve has said it is waiting for it (however long
            # serve's own start takes on a loaded machine), or after 20 s.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if log.exists() and "trying again in" in log.read_text(errors="replace"):
                    break
                time.sleep(0.05)
            stopped_server.start()

        starter = threading.Thread(target=start_once_serve_waits)
        starter.start()
        try:
            env = serve_env(url, DATABASE_CONNECT_TIMEOUT_SECONDS="30")
            with ServeProcess(tmp_path / "x.db", env, database_url=url) as serve:
                assert serve._healthy()
                assert "trying again in" in serve.logs()
        finally:
            starter.join()

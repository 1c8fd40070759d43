"""Fixtures: a real local stand-in for Codat and a real `serve` process, on loopback, on a
real store of each backend.

Tests that run on every backend say so with `@pytest.mark.backends("sqlite", "postgres")` (or
a module's `pytestmark`): their `database_url` (and so `serve`) is then parametrized over them.
Without the marker a test runs on SQLite only.

PostgreSQL runs on a throwaway server (tests/pg_server.py), one per pytest worker, started by
the first test that needs it; each test gets a database of its own. Without the server
binaries, its tests are skipped with the command that installs them, unless REQUIRE_POSTGRES=1
(set by CI) makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from processor.codat.client import basic_auth
from processor.sandbox import SandboxServer
from processor.sandbox.sender import generate_secret
from tests.pg_server import PostgresServer, ServerUnavailable, running_server
from tests.support import API_KEY, BACKENDS, Serve, ServeProcess, ServeThread, free_port


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    backends = marker.args if marker else ("sqlite",)
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}; expected some of {BACKENDS}")
    metafunc.parametrize("backend", backends, ids=[str(b) for b in backends], scope="function")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this worker's session; skipped (or failed) if there is none."""
    try:
        with running_server() as server:
            yield server
    except ServerUnavailable as missing:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1: {missing}", pytrace=False)
        pytest.skip(str(missing))


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped after the test."""
    with postgres_server.fresh_database() as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A store of each backend shared by a module's tests (a module-scoped `serve`)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'processor.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.fresh_database() as url:
        yield url


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    """The store `serve` runs on in this test: a SQLite file, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'processor.db'}"
    # Asked for here, so SQLite's tests never start a server.
    return str(request.getfixturevalue("postgres_url"))


class Codat:
    """The stand-in for Codat, driven over its HTTP API like a test would drive the real one."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": basic_auth(API_KEY)}, timeout=10
        )

    def create_company(self, name: str = "Sawayn Group") -> dict[str, Any]:
        return self._ok(self.http.post("/companies", json={"name": name}))

    def create_connection(self, company_id: str, platform_key: str = "gbol") -> dict[str, Any]:
        return self._ok(
            self.http.post(
                f"/companies/{company_id}/connections", json={"platformKey": platform_key}
            )
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, f"/_sandbox{path}", **kwargs)
        assert answer.is_success, answer.text
        return answer.json() if answer.content else None

    def authorize(self, company_id: str, connection_id: str) -> Any:
        return self.admin("POST", f"/companies/{company_id}/connections/{connection_id}/authorize")

    def state(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/state"))

    def faults(self, rules: list[dict[str, Any]]) -> None:
        self.admin("POST", "/faults", json=rules)

    @staticmethod
    def _ok(answer: httpx.Response) -> dict[str, Any]:
        assert answer.is_success, answer.text
        return dict(answer.json())

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def serve_port() -> int:
    return free_port()


@pytest.fixture
def codat(secret: str, serve_port: int) -> Iterator[Codat]:
    url = f"http://127.0.0.1:{serve_port}/webhooks/codat"
    with SandboxServer(
        api_key=API_KEY, webhook_url=url, secrets=[secret], retry_delays=(0, 0.2, 0.5, 1, 2, 3)
    ) as server:
        client = Codat(server)
        yield client
        client.close()


@pytest.fixture
def serve(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    codat: Codat,
    secret: str,
    serve_port: int,
    database_url: str,
) -> Iterator[Serve]:
    """`serve` in a thread of the test process; a real process for tests marked
    `serve_process` (those that kill it or read what only a process has); more environment
    from a `serve_env` marker."""
    kind = ServeProcess if request.node.get_closest_marker("serve_process") else ServeThread
    extra = request.node.get_closest_marker("serve_env")
    server = kind(
        tmp_path / "processor.db",
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
            **(extra.kwargs if extra else {}),
        },
        port=serve_port,
        database_url=database_url,
    )
    with server:
        yield server

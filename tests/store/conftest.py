"""The store under test, by backend: each contract test runs once per backend in `BACKENDS`.

A backend is added by one more entry here (its name, the id of its tests) and one more branch in
`store_url` that hands out a fresh, empty store's URL; the contract tests then run against it.

PostgreSQL runs on a throwaway server (tests/store/pg_server.py), one per pytest worker, started
by the first test that needs it; each test gets a database of its own. Without the server
binaries, its tests are skipped with the command that installs them, unless REQUIRE_POSTGRES=1
(set by CI) makes that a failure.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from store import Store, StoreError, open_store
from tests.store.pg_server import PostgresServer, ServerUnavailable, running_server

BACKENDS = ["sqlite", "postgres"]


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


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store of one backend, for `open_store`."""
    backend = str(request.param)
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'processor.db'}"
    if backend == "postgres":
        # Asked for here, not as a parameter, so SQLite's tests never start a server.
        return str(request.getfixturevalue("postgres_url"))
    raise AssertionError(f"no store URL for backend {backend!r}")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The writable store at `store_url`, created and migrated by opening it."""
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def refused_write(store_url: str) -> tuple[type[Exception], ...]:
    """What a read-only store raises for a write: the contract does not say, so each backend's
    own error is allowed besides StoreError (SQLite: "attempt to write a readonly database";
    PostgreSQL: "cannot execute INSERT in a read-only transaction")."""
    backend = store_url.split(":", 1)[0]
    if backend == "sqlite":
        return (StoreError, sqlite3.Error)
    if backend == "postgresql":
        return (StoreError, psycopg.errors.ReadOnlySqlTransaction)
    raise AssertionError(f"no refused-write errors for backend {backend!r}")

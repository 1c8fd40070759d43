"""The store under test, by backend: each contract test runs once per backend in `BACKENDS`.

A backend is added by one more entry here (its name, the id of its tests) and one more branch in
`store_url` that hands out a fresh, empty store's URL; the contract tests then run against it.

PostgreSQL runs on a throwaway server (`postgres_url` in tests/conftest.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from store import Store, StoreError, open_store
from tests.support import BACKENDS


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

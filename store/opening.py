"""`open_store(url)`: the backend named by a `DATABASE_URL`."""

from __future__ import annotations

from pathlib import Path

from store.contract import Store
from store.errors import StoreError
from store.urls import redact_url

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db` or `sqlite:////absolute.db` to a path; StoreError otherwise."""
    if not url.startswith(SQLITE_PREFIX) or len(url) == len(SQLITE_PREFIX):
        raise StoreError(
            "expected a database URL like sqlite:///relative/path.db or "
            f"sqlite:////absolute/path.db, found {redact_url(url)!r}"
        )
    return Path(url[len(SQLITE_PREFIX) :])


def open_store(url: str, *, readonly: bool = False, timeout: float = 5.0) -> Store:
    """Open the store at `url`; writers create and migrate it, readers never write.

    `sqlite:///path.db` is the SQLite file at that path; `postgresql://user@host/db` (or
    `postgres://`), with any query parameters such as `sslmode`, is a PostgreSQL database.
    """
    if url.startswith(POSTGRES_SCHEMES):
        from store.postgres import PostgresStore

        return PostgresStore.open(url, readonly=readonly, timeout=timeout)
    if url.startswith(SQLITE_PREFIX):
        from store.sqlite import SqliteStore

        return SqliteStore.open(sqlite_path(url), readonly=readonly, timeout=timeout)
    raise StoreError(
        "expected a database URL like sqlite:///relative/path.db, sqlite:////absolute/path.db "
        f"or postgresql://user@host:5432/database, found {redact_url(url)!r}"
    )

"""`open_store(url)`: the backend named by a `DATABASE_URL`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from store.contract import ReaderPool, Store
from store.errors import StoreError
from store.urls import redact_url

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_EXPECTED = (
    "expected a database URL like sqlite:///relative/path.db, sqlite:////absolute/path.db "
    "or postgresql://user:password@host:5432/database"
)


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
    raise StoreError(_EXPECTED + f", found {redact_url(url)!r}")


def open_readers(url: str, *, size: int = 4, timeout: float = 5.0) -> ReaderPool:
    """Read-only stores for concurrent queries: per thread (SQLite), a pool of `size`
    connections (PostgreSQL)."""
    if url.startswith(POSTGRES_SCHEMES):
        from store.postgres.readers import PostgresReaders

        return PostgresReaders(url, size=size, timeout=timeout)
    from store.sqlite.readers import SqliteReaders

    return SqliteReaders(sqlite_path(url), timeout=timeout)


def describe_url(url: str) -> str:
    """Where a store lives, for messages: the SQLite file, or the database and its server."""
    if url.startswith(POSTGRES_SCHEMES):
        parts = urlsplit(url)
        where = parts.hostname or "localhost"
        if parts.port:
            where += f":{parts.port}"
        return f"PostgreSQL database {parts.path.lstrip('/') or '(default)'!r} on {where}"
    return f"SQLite file {str(sqlite_path(url))!r}"


def missing_store(url: str) -> str | None:
    """Why a store a command should only read cannot exist, if it is sure (a missing SQLite
    file); None when it may exist (a server is asked when the store is opened)."""
    if url.startswith(SQLITE_PREFIX):
        path = sqlite_path(url)
        if not path.exists():
            return f"database file {str(path)!r} does not exist (check DATABASE_URL)"
    return None


def check_url(url: str) -> str:
    """`url` if a backend can open it; StoreError saying what was expected otherwise."""
    if url.startswith(POSTGRES_SCHEMES):
        parts = urlsplit(url)
        if not parts.path.lstrip("/") and not parts.hostname:
            raise StoreError(_EXPECTED + f", found {redact_url(url)!r}")
        return url
    if not url.startswith(SQLITE_PREFIX) or len(url) == len(SQLITE_PREFIX):
        raise StoreError(_EXPECTED + f", found {redact_url(url)!r}")
    return url

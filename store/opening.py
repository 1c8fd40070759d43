"""`open_store(url)`: the backend named by a `DATABASE_URL`."""

from __future__ import annotations

from pathlib import Path

from store.contract import Store
from store.errors import StoreError

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db` or `sqlite:////absolute.db` to a path; StoreError otherwise."""
    if not url.startswith(SQLITE_PREFIX) or len(url) == len(SQLITE_PREFIX):
        raise StoreError(
            "expected a database URL like sqlite:///relative/path.db or "
            f"sqlite:////absolute/path.db, found {url!r}"
        )
    return Path(url[len(SQLITE_PREFIX) :])


def open_store(url: str, *, readonly: bool = False, timeout: float = 5.0) -> Store:
    """Open the store at `url`; writers create and migrate it, readers never write."""
    from store.sqlite import SqliteStore

    return SqliteStore.open(sqlite_path(url), readonly=readonly, timeout=timeout)

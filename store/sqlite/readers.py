"""Read-only SQLite connections for queries: one per thread, opened on first use.

SQLite connections are cheap and a reader never blocks the writer (WAL), so each thread of the
query pool keeps its own for the life of the process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.sqlite import SqliteStore


class SqliteReaders:
    """Hands each thread its own read-only connection to one SQLite file."""

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[SqliteStore] = []
        self._lock = threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[SqliteStore]:
        store: SqliteStore | None = getattr(self._local, "store", None)
        if store is None:
            store = SqliteStore.open(self.path, readonly=True, timeout=self.timeout)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        yield store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()

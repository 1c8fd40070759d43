"""Read-only store connections for queries, one per worker thread, opened on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from store import Store, open_store

T = TypeVar("T")


class Readers:
    """Runs read-only queries off the event loop; the connections cannot write."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._local = threading.local()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[Store], T]) -> T:
        return await run_in_threadpool(self._run, fn)

    def _run(self, fn: Callable[[Store], T]) -> T:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.database_url, readonly=True)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return fn(store)

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()

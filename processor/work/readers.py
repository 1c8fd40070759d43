"""Read-only store connections for queries, one per worker thread, opened on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from store import Store

T = TypeVar("T")


class Readers:
    """Runs read-only queries off the event loop; the connections cannot write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[Store], T]) -> T:
        return await run_in_threadpool(self._run, fn)

    def _run(self, fn: Callable[[Store], T]) -> T:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = Store.open(self.path, readonly=True)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return fn(store)

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()

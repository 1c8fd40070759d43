"""Read-only store connections for queries, run off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from store import Store, open_readers

T = TypeVar("T")


class Readers:
    """Runs read-only queries in the thread pool; the connections cannot write.

    SQLite: a connection per thread; PostgreSQL: a pool of `pool_size` connections."""

    def __init__(self, database_url: str, *, pool_size: int = 4, timeout: float = 5.0) -> None:
        self.database_url = database_url
        self._pool = open_readers(database_url, size=pool_size, timeout=timeout)

    async def run(self, fn: Callable[[Store], T]) -> T:
        return await run_in_threadpool(self._run, fn)

    def _run(self, fn: Callable[[Store], T]) -> T:
        with self._pool.reading() as store:
            return fn(store)

    def close(self) -> None:
        self._pool.close()

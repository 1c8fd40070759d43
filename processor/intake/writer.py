"""The one writer: every write to the store goes through one queue, in shared transactions.

Webhook requests hand their event to the writer and wait. The writer takes everything queued,
appends it in one transaction and commits once, so one fsync serves the whole batch; only then
are the waiting requests released to answer 2xx. Other writes (folds, effect results) are jobs
in the same queue, each in a transaction of its own.

On SQLite the statements run on the event loop thread and only the blocking parts (COMMIT,
which waits for the disk, and BEGIN when another process holds the lock) run in a thread.
Running the statements in a second thread instead would make each one wait for the GIL behind
the loop: measured here, an append went from 58 us to 7.5 ms with the other thread busy. On
PostgreSQL (`store.remote`) every statement waits on the server, so the whole transaction runs
in a thread, which releases the GIL while it waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from store import InsertResult, NewEvent, Store, is_unavailable, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 512


@dataclass
class _Append:
    event: NewEvent
    future: asyncio.Future[InsertResult]


@dataclass
class _Call:
    fn: Callable[[Store], Any]
    future: asyncio.Future[Any]


class Writer:
    """Owns the writable store connection and the queue every write goes through."""

    def __init__(self, database_url: str, *, busy_timeout: float = 5.0) -> None:
        self.database_url = database_url
        self.busy_timeout = busy_timeout
        self._queue: list[_Append | _Call] = []
        self._store: Store | None = None
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0
        self.appended = 0

    def start(self) -> None:
        self._store = open_store(self.database_url, timeout=self.busy_timeout)

    def lane(self) -> Writer:
        """A writer for other work (folds, effects) that need not queue behind webhooks.

        On a server (PostgreSQL) that is a second writer on its own connection: writes of both
        run at once, and webhooks never wait for a fold's round trips. On SQLite, with one
        write lock for the whole file, it is this writer."""
        if not self._require_store().remote:
            return self
        other = Writer(self.database_url, busy_timeout=self.busy_timeout)
        other.start()
        return other

    async def stop(self) -> None:
        while self._drainer is not None and not self._drainer.done():
            await asyncio.wait([self._drainer])
        if self._store is not None:
            self._store.close()
            self._store = None

    async def append(self, event: NewEvent) -> InsertResult:
        """Append one event; returns once it is committed to disk."""
        future: asyncio.Future[InsertResult] = asyncio.get_running_loop().create_future()
        self._enqueue(_Append(event, future))
        return await future

    async def call(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(store)` in one write transaction (keep it short: it runs on the loop)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_Call(fn, future))
        return await future

    def _enqueue(self, job: _Append | _Call) -> None:
        self._queue.append(job)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            jobs, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            appends = [job for job in jobs if isinstance(job, _Append)]
            if appends:
                await self._append_batch(appends)
            for call in (job for job in jobs if isinstance(job, _Call)):
                try:
                    result = await self._transaction(call.fn)
                except Exception as error:
                    _settle(call.future, error=error)
                else:
                    _settle(call.future, result=result)

    async def _append_batch(self, jobs: list[_Append]) -> None:
        try:
            results = await self._transaction(
                lambda store: store.append_events([job.event for job in jobs])
            )
        except Exception as error:
            if len(jobs) > 1 and not is_unavailable(error):
                # One bad row must not fail the others: store them one by one.
                for job in jobs:
                    await self._append_batch([job])
                return
            log.error("could not store %d webhook event(s): %s", len(jobs), error)
            for job in jobs:
                _settle(job.future, error=error)
            return
        self.batches += 1
        self.appended += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            _settle(job.future, result=result)

    async def _transaction(self, fn: Callable[[Store], T]) -> T:
        """One transaction: statements on the loop, a contended BEGIN and the COMMIT in a thread.

        A second thread doing SQL waits for the GIL behind the loop (58 us per insert became
        7.5 ms with the loop busy), so only the calls that block on the disk or a lock leave it.
        """
        store = self._require_store()
        if store.remote:
            return await asyncio.to_thread(_in_transaction, store, fn)
        if not store.try_begin():
            await asyncio.to_thread(store.begin)
        try:
            result = fn(store)
        except BaseException:
            store.rollback()
            raise
        await asyncio.to_thread(store.commit)
        return result

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the writer is not started")
        return self._store


def _in_transaction(store: Store, fn: Callable[[Store], T]) -> T:
    with store.transaction():
        return fn(store)


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # the request went away; the write stands
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DirectWriter:
    """The writer's interface for command-line tools: each call is one transaction, in-line.

    Concurrent `serve` processes are safe: every transaction starts with BEGIN IMMEDIATE, so
    writers queue on SQLite's lock (busy timeout) rather than overwrite each other.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    async def call(self, fn: Callable[[Store], T]) -> T:
        with self.store.transaction():
            return fn(self.store)

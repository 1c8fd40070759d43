"""The one writer: every write to the store goes through one thread, in shared transactions.

Webhook requests hand their event to the writer and wait. The writer takes everything queued,
appends it in one transaction and commits once, so one fsync serves the whole batch; only then
are the waiting requests released to answer 2xx. Other writes (folds, effect results) run as
jobs on the same thread, each in its own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from store import InsertResult, NewEvent, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 512


@dataclass
class _Append:
    event: NewEvent
    future: asyncio.Future[InsertResult]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Call:
    fn: Callable[[Store], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class Writer:
    """Owns the writable store connection and a thread that runs every write."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[_Append | _Call | None] = queue.SimpleQueue()
        self._store: Store | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.batches = 0
        self.appended = 0

    def start(self) -> None:
        self._store = Store.open(self.path, timeout=self.busy_timeout)
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def append(self, event: NewEvent) -> InsertResult:
        """Append one event; returns once it is committed to disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InsertResult] = loop.create_future()
        self._queue.put(_Append(event, future, loop))
        return await future

    async def call(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(store)` in one write transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(fn, future, loop))
        return await future

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                jobs.append(more)
            appends = [j for j in jobs if isinstance(j, _Append)]
            if appends:
                self._append_batch(appends)
            for call in (j for j in jobs if isinstance(j, _Call)):
                self._call(call)

    def _append_batch(self, jobs: list[_Append]) -> None:
        store = self._require_store()
        try:
            with store.transaction():
                results = store.append_events([job.event for job in jobs])
        except Exception as error:
            if len(jobs) > 1 and not isinstance(error, sqlite3.OperationalError):
                # One bad row must not fail the others: store them one by one.
                for job in jobs:
                    self._append_batch([job])
                return
            log.error("could not store %d webhook event(s): %s", len(jobs), error)
            for job in jobs:
                _settle(job.loop, job.future, error=error)
            return
        self.batches += 1
        self.appended += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            _settle(job.loop, job.future, result=result)

    def _call(self, job: _Call) -> None:
        store = self._require_store()
        try:
            with store.transaction():
                result = job.fn(store)
        except Exception as error:
            _settle(job.loop, job.future, error=error)
            return
        _settle(job.loop, job.future, result=result)

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the writer is not started")
        return self._store


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    *,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    # A closed loop means nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


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

"""The one writer: every write to the store goes through one queue, in shared transactions.

Webhook requests hand their event to the writer and wait. The writer takes everything queued,
appends it in one transaction and commits once, so one fsync serves the whole batch; only then
are the waiting requests released to answer 2xx. Other writes (folds, effect results) are jobs
in the same queue. On SQLite they join the batch's transaction, each in a savepoint of its own
(undone alone if it fails), so a fold costs no fsync of its own: a fold between two batches
of webhooks had made each cycle wait for two. On PostgreSQL each is a transaction of its own.

On SQLite the statements run on the event loop thread and only the blocking parts (COMMIT,
which waits for the disk, and BEGIN when another process holds the lock) run in a thread.
Running the statements in a second thread instead would make each one wait for the GIL behind
the loop: measured here, an append went from 58 us to 7.5 ms with the other thread busy. On
PostgreSQL (`store.remote`) every statement waits on the server, so the whole transaction runs
in a thread, which releases the GIL while it waits; and a server takes several transactions at
once, so the writer keeps `SERVER_LANES` connections: a batch starts on an idle one while the
batches before it still wait for their commits (measured under wrk: one transaction of about
16 appends took 9-12 ms, most of it waiting, and the next batch waited behind it).
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
# Transactions in flight at once on a server (PostgreSQL): one connection each.
SERVER_LANES = 3


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

    def __init__(
        self, database_url: str, *, busy_timeout: float = 5.0, lanes: int = SERVER_LANES
    ) -> None:
        self.database_url = database_url
        self.busy_timeout = busy_timeout
        self.lanes = lanes
        self._queue: list[_Append | _Call] = []
        self._store: Store | None = None
        # The connections with no transaction in flight (SQLite: its one connection; a server:
        # up to `lanes`), and the batches in flight.
        self._idle: list[Store] = []
        self._running: set[asyncio.Task[None]] = set()
        self._dispatching = False
        self.batches = 0
        self.appended = 0
        self.commits = 0

    def start(self) -> None:
        self._store = open_store(self.database_url, timeout=self.busy_timeout)
        self._idle = [self._store]
        if self._store.remote:
            for _ in range(self.lanes - 1):
                self._idle.append(open_store(self.database_url, timeout=self.busy_timeout))

    def lane(self) -> Writer:
        """A writer for other work (folds, effects) that need not queue behind webhooks.

        On a server (PostgreSQL) that is a second writer on its own connection: writes of both
        run at once, and webhooks never wait for a fold's round trips. On SQLite, with one
        write lock for the whole file, it is this writer."""
        if not self._require_store().remote:
            return self
        other = Writer(self.database_url, busy_timeout=self.busy_timeout, lanes=1)
        other.start()
        return other

    async def stop(self) -> None:
        self._dispatch()  # what is queued starts now; each batch ending starts the next
        while self._running:
            await asyncio.wait(list(self._running))
        for idle in self._idle:
            if idle is not self._store:
                idle.close()
        self._idle = []
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
        self._require_store()  # a stopped writer refuses, rather than queue for ever
        self._queue.append(job)
        if not self._dispatching:
            # At the loop's next step: what is queued in this one goes in the same batch.
            self._dispatching = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """What is queued goes, as one batch, to each idle connection in turn (on SQLite, one
        batch at a time)."""
        self._dispatching = False
        while self._queue and self._idle:
            store = self._idle.pop()
            jobs, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            task = asyncio.get_running_loop().create_task(self._on(store, jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _on(self, store: Store, jobs: list[_Append | _Call]) -> None:
        try:
            if store.remote:
                await self._apart(store, jobs)
            else:
                await self._together(jobs)
        finally:
            self._idle.append(store)
            self._dispatch()

    async def _together(self, jobs: list[_Append | _Call]) -> None:
        """Every job of the batch in one transaction and one commit (one fsync), each job in a
        savepoint of its own so that a failing one is undone alone: the appends first, then the
        calls in the order they came. A job's caller hears of it once the commit is done."""
        store = self._require_store()
        try:
            if not store.try_begin():
                await asyncio.to_thread(store.begin)
        except Exception as error:
            log.error("could not start a transaction for %d write(s): %s", len(jobs), error)
            for job in jobs:
                _settle(job.future, error=error)
            return
        done: list[tuple[asyncio.Future[Any], Any]] = []
        try:
            appends = [job for job in jobs if isinstance(job, _Append)]
            if appends:
                done += self._appended(store, appends)
            for call in (job for job in jobs if isinstance(job, _Call)):
                if not _still_open(store):  # the store ended it (disk I/O error)
                    _settle(call.future, error=_lost_transaction())
                    continue
                try:
                    with store.savepoint():
                        done.append((call.future, call.fn(store)))
                except Exception as error:
                    _settle(call.future, error=error)
            if not _still_open(store):
                raise _lost_transaction()
            await asyncio.to_thread(store.commit)
            self.commits += 1
        except BaseException as error:
            store.rollback()
            if isinstance(error, Exception) and done:
                log.error("could not commit %d write(s): %s", len(done), error)
            for future, _ in done:
                _settle(future, error=error)
            if not isinstance(error, Exception):
                raise
            return
        appended = sum(1 for job in jobs if isinstance(job, _Append))
        if appended:
            self.batches += 1
            self.appended += appended
        for future, result in done:
            _settle(future, result=result)

    def _appended(self, store: Store, jobs: list[_Append]) -> list[tuple[asyncio.Future[Any], Any]]:
        """Append the events of `jobs` in a savepoint; the futures to settle with their results
        once committed. A failed job is settled with its error at once."""
        try:
            with store.savepoint():
                results = store.append_events([job.event for job in jobs])
        except Exception as error:
            if len(jobs) > 1 and not is_unavailable(error) and _still_open(store):
                # One bad row must not fail the others: append them one by one.
                return [done for job in jobs for done in self._appended(store, [job])]
            log.error("could not store %d webhook event(s): %s", len(jobs), error)
            for job in jobs:
                _settle(job.future, error=error)
            return []
        return [(job.future, result) for job, result in zip(jobs, results, strict=True)]

    async def _apart(self, store: Store, jobs: list[_Append | _Call]) -> None:
        """On a server: the appends in one transaction, then each call in one of its own."""
        appends = [job for job in jobs if isinstance(job, _Append)]
        if appends:
            await self._append_batch(store, appends)
        for call in (job for job in jobs if isinstance(job, _Call)):
            try:
                result = await self._transaction(store, call.fn)
            except Exception as error:
                _settle(call.future, error=error)
            else:
                _settle(call.future, result=result)

    async def _append_batch(self, store: Store, jobs: list[_Append]) -> None:
        try:
            results = await self._transaction(
                store, lambda store: store.append_events([job.event for job in jobs])
            )
        except Exception as error:
            if len(jobs) > 1 and not is_unavailable(error):
                # One bad row must not fail the others: store them one by one.
                for job in jobs:
                    await self._append_batch(store, [job])
                return
            log.error("could not store %d webhook event(s): %s", len(jobs), error)
            for job in jobs:
                _settle(job.future, error=error)
            return
        self.batches += 1
        self.appended += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            _settle(job.future, result=result)

    async def _transaction(self, store: Store, fn: Callable[[Store], T]) -> T:
        """One transaction, in a thread (a server: every statement waits on the network)."""
        result = await asyncio.to_thread(_in_transaction, store, fn)
        self.commits += 1
        return result

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the writer is not started")
        return self._store


def _still_open(store: Store) -> bool:
    """Whether the store's transaction is still open: SQLite ends it itself on some errors (disk
    I/O, disk full), after which statements would each commit on their own."""
    return bool(getattr(store, "in_transaction", True))


def _lost_transaction() -> Exception:
    return RuntimeError("the store ended the transaction (an I/O error?): nothing was written")


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

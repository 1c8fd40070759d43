"""A full replay's rebuilds planned in helper processes, so that every core folds.

A replay spends most of its time reading logs and folding them (`plan_rebuilds`), work that
writes nothing. Helper processes, each with its own read-only connection, plan the pages of
companies a few ahead; the replay's own process applies each plan in its write transaction
(`apply_rebuilds`), in order, as one process would.

A plan is read outside that transaction, so it is trusted only if nothing else wrote since it
was asked for: the store's count of other connections' commits (`commits_elsewhere`) is read
before a page is handed to a helper, and again inside the transaction that applies it. Equal,
no one else wrote in between (the replay's own commits are of other companies and do not
count): the plan is what the transaction would read. Different (a running `serve` took a
webhook, say), the page is rebuilt in the transaction from what it reads there, as without
helpers. Where the store cannot tell (PostgreSQL), there are no helpers.

Helpers are started, not forked: a forked child would hold copies of this process's SQLite
connections, and closing one there would release this process's locks on the file.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from types import TracebackType
from typing import TypeVar

from processor.work.folding import (
    FoldReport,
    Rebuilt,
    apply_rebuilds,
    plan_rebuilds,
    rebuild_companies,
)
from store import Store, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")
# Pages planned ahead of the one being applied, per helper.
AHEAD_PER_HELPER = 2
# Below this many companies a replay runs in one process: starting helpers costs more.
MIN_COMPANIES = 1000

# How one page is rebuilt in the replay's transaction: `rebuild(store, now)`.
Rebuild = Callable[[Store, str], list[FoldReport]]

_reads: Store | None = None  # a helper's read-only connection


def helpers_for(setting: int, companies: int) -> int:
    """How many helper processes a full replay of `companies` uses: REPLAY_PROCESSES if set
    (1: none), else one per CPU when there are two or more and enough companies."""
    if setting:
        return setting if setting >= 2 else 0
    cpus = os.cpu_count() or 1
    return cpus if cpus >= 2 and companies >= MIN_COMPANIES else 0


class Planners:
    """Helper processes planning pages of every company (a full replay), a few pages ahead."""

    def __init__(self, database_url: str, processes: int) -> None:
        self.processes = processes
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_helper,
            initargs=(database_url,),
        )
        # Pages whose plans were used, and pages rebuilt in the transaction instead.
        self.applied = 0
        self.reread = 0
        # Why the helpers stopped planning, if they did.
        self.failure: str | None = None

    def __enter__(self) -> Planners:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def ahead(
        self,
        read: Callable[[Store, list[str]], T],
        pages: Iterable[list[str]],
        counted: Store | None = None,
    ) -> Iterator[tuple[list[str], int | None, T | None]]:
        """`read(store, page)` of each page, in order, computed by the helpers a few pages
        ahead; with each, the count of commits elsewhere of `counted` (the caller's own
        connection, if given) read before it was asked.
        None for a page a helper could not read (it failed, or died): the caller reads that
        one itself. `read` must be a module's function (or a partial of one): it is sent by
        name."""
        pages = iter(pages)
        waiting: deque[tuple[list[str], int | None, Future[T] | None]] = deque()

        def ask() -> None:
            page = next(pages, None)
            if page is None:
                return
            # Read before the helper reads (it starts once handed the page).
            version = counted.commits_elsewhere() if counted is not None else None
            asked = None
            if self.failure is None:
                try:
                    asked = self._pool.submit(_read, read, page)
                except BrokenProcessPool as error:
                    self._failed(error)
            waiting.append((page, version, asked))

        for _ in range(self.processes * AHEAD_PER_HELPER):
            ask()
        while waiting:
            page, version, asked = waiting.popleft()
            found = None
            if asked is not None:
                try:
                    found = asked.result()
                except Exception as error:
                    self._failed(error)
            ask()
            yield page, version, found

    def _failed(self, error: Exception) -> None:
        """A helper failed: said once, and the pages it did not read are read here."""
        if self.failure is None:
            log.warning(
                "a replay helper failed (%s); its pages are read by the replay itself", error
            )
            self.failure = str(error) or type(error).__name__

    def rebuilds(
        self, store: Store, pages: Iterable[list[str]]
    ) -> Iterator[tuple[list[str], Rebuild]]:
        """Each page, in order, with how to rebuild it in the caller's transaction."""
        for page, version, plan in self.ahead(_plan_page, pages, counted=store):
            yield page, partial(self._rebuild, page, version, plan)

    def _rebuild(
        self,
        page: list[str],
        version: int | None,
        plan: list[Rebuilt | Unchanged] | None,
        store: Store,
        now: str,
    ) -> list[FoldReport]:
        if plan is not None and version is not None and store.commits_elsewhere() == version:
            self.applied += 1
            to_write = [item for item in plan if isinstance(item, Rebuilt)]
            written = iter(apply_rebuilds(store, to_write, now))
            return [
                next(written) if isinstance(item, Rebuilt) else _unchanged(item) for item in plan
            ]
        self.reread += 1
        return rebuild_companies(store, page, now, key_range=True)


def _start_helper(database_url: str) -> None:
    global _reads
    # As in the replay's own process: no cycles are made, and the collector's passes over
    # what a page allocates cost a tenth of the time.
    gc.disable()
    # Ctrl-C is the replay's to handle (it stops the helpers); not each helper's to report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _reads = open_store(database_url, readonly=True)


# A company whose rebuild writes nothing, as a helper hands it over (a tuple pickles in a
# fraction of the time a Rebuilt takes): its id, its state before and after, its number of
# events, and their outcomes counted.
Unchanged = tuple[str, str | None, str, int, tuple[tuple[str, int], ...]]


def _plan_page(store: Store, page: list[str]) -> list[Rebuilt | Unchanged]:
    """A page's plan, each company whose rebuild writes nothing made small."""
    return [
        _small(done) if _writes_nothing(done) else done
        for done in plan_rebuilds(store, page, key_range=True, effects=True)
    ]


def _writes_nothing(done: Rebuilt) -> bool:
    return not (
        done.needed
        or done.outcomes
        or done.folded_now
        or done.state
        or done.reported
        or done.open_effects
    )


def _small(done: Rebuilt) -> Unchanged:
    report = done.report
    return (
        report.company_id,
        report.before,
        str(report.after),
        report.events,
        tuple(report.outcomes.items()),
    )


def _unchanged(item: Unchanged) -> FoldReport:
    company_id, before, after, events, outcomes = item
    report = FoldReport(company_id, before, after, events)
    report.outcomes = dict(outcomes)
    return report


def _read(read: Callable[[Store, list[str]], T], page: list[str]) -> T:
    if _reads is None:
        raise RuntimeError("the replay helper has no store (its initializer did not run)")
    return read(_reads, page)

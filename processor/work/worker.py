"""The worker inside `serve`: folds pending events per company, then carries out the effects.

Folds run on the writer thread (each company in its own transaction). Effects run concurrently
across companies, never two at once for one company, each claimed in the store first so that a
second process (a replay) cannot carry out the same one at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import TypeVar

from handlers.commands import CREATE_PARTNER_EXPENSE_CONNECTION
from processor import clock
from processor.codat.client import CodatClient
from processor.config import Settings
from processor.intake.writer import Writer
from processor.metrics import Metrics
from processor.work import ratelimits
from processor.work.effects import attempt_and_record, claim_seconds, release_dead_claims
from processor.work.folding import FoldReport, fold_companies
from processor.work.syncs import SyncOutcome, collecting_outcomes
from store import (
    EFFECT_DONE,
    EFFECT_PENDING,
    Effect,
    RateLimitPause,
    Store,
    WorkerReads,
    is_unavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
IDLE_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 10.0
FOLD_BATCH = 25  # folds run on the event loop: keep each transaction to a few ms
# How often the worker reads Codat's rate-limit pause from the store (it is shared).
PAUSE_READ_SECONDS = 0.25


class Worker:
    """Moves every company's onboarding forward, from the log to Codat and back."""

    def __init__(
        self,
        writer: Writer,
        reads: WorkerReads,
        codat: CodatClient,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self.writer = writer
        # A read-only connection for the loop's quick indexed look-ups: reads need no place
        # in the write queue, and take no write lock from other processes.
        self.reads = reads
        self.codat = codat
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.owner = f"serve:{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self.folds = 0
        self.effects_run = 0
        # Codat's rate-limit pause as last read from the store, and when it was read.
        self.pause: RateLimitPause | None = None
        self._pause_read_at: float | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Loop until cancelled."""
        released = False
        backoff = IDLE_SECONDS
        while True:
            try:
                if not released:
                    await self.writer.call(release_dead_claims)
                    released = True
                await self.step()
                await self._sleep()
                backoff = IDLE_SECONDS
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_unavailable(error):
                    # The store is down (a lost server, a full disk): one line, and longer
                    # waits while it lasts; the work is all in the store, nothing is lost.
                    log.warning(
                        "worker paused %.0f s: the store is unavailable: %s", backoff, error
                    )
                else:
                    log.exception("worker step failed; trying again in %.0f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def step(self) -> None:
        """Fold what is pending (claiming the intents it opens in the same transaction) and
        start those, then start the other effects that are due."""
        self._wake.clear()
        await self._read_pause()
        await self._fold_pending()
        await self._start_due_effects()

    async def drain(self) -> None:
        """Wait for the effects in flight (used at shutdown and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _read(self, fn: Callable[[WorkerReads], T]) -> T:
        """A quick read: on the loop for SQLite, in a thread when it waits on a server."""
        if self.reads.remote:
            return await asyncio.to_thread(fn, self.reads)
        return fn(self.reads)

    async def _sleep(self) -> None:
        due = await self._read(lambda reads: reads.next_effect_due())
        timeout = IDLE_SECONDS
        if due is not None:
            timeout = min(
                timeout, max(0.0, (clock.parse(due) - clock.parse(clock.now())).total_seconds())
            )
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when it is
        # cancelled in the very step the wake-up comes, and the worker then never stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0.005)):
                await self._wake.wait()

    async def _fold_pending(self) -> None:
        company_ids = await self._read(lambda reads: reads.pending_company_ids())
        for start in range(0, len(company_ids), FOLD_BATCH):
            chunk = company_ids[start : start + FOLD_BATCH]
            reports, outcomes, claimed = await self.writer.call(self._folder(chunk))
            self.folds += len(reports)
            self._start(claimed)
            for report in reports:
                if report.before != report.after:
                    self._transition(report)
            for outcome in outcomes:
                self._sync_outcome(outcome)

    def _folder(
        self, company_ids: list[str]
    ) -> Callable[[Store], tuple[list[FoldReport], list[SyncOutcome], list[Effect]]]:
        """Fold the companies, then claim the effect due first of each one not busy, in the
        same transaction: an intent the fold opens is claimed without a commit of its own."""
        idle = [company_id for company_id in company_ids if company_id not in self._busy]
        claim = self._claim_all(self.pause)

        def fold(store: Store) -> tuple[list[FoldReport], list[SyncOutcome], list[Effect]]:
            now = clock.now()
            with collecting_outcomes() as outcomes:
                reports = fold_companies(store, company_ids, now)
            opened = store.open_effects_of(idle) if idle else {}
            due = sorted(
                (effect for effects in opened.values() for effect in effects),
                key=lambda effect: effect.next_attempt_at,
            )
            claimed = claim(store, [effect for effect in due if effect.next_attempt_at <= now])
            return reports, outcomes, claimed

        return fold

    def _sync_outcome(self, outcome: SyncOutcome) -> None:
        """Counts of a sync whose outcome (or failing transactions) a fold recorded."""
        if outcome.outcome is not None and outcome.outcome != outcome.before:
            self.metrics.syncs.labels(outcome.outcome).inc()
        if outcome.failing > outcome.failing_before:
            self.metrics.failing_transactions.inc(outcome.failing - outcome.failing_before)

    async def _read_pause(self) -> None:
        """Codat's rate-limit pause, shared in the store: a newer notice is applied first."""
        now_seconds = asyncio.get_running_loop().time()
        last = self._pause_read_at
        if last is not None and now_seconds - last < PAUSE_READ_SECONDS:
            return
        if self.pause is not None and last is not None:
            self.metrics.rate_limit_paused_seconds.inc(now_seconds - last)
        self._pause_read_at = now_seconds
        now = clock.now()
        if await self._read(lambda reads: _notice_is_news(reads)):
            self.pause = await self.writer.call(lambda store: ratelimits.refresh(store, now))
        else:
            self.pause = await self._read(lambda reads: _pause_of(reads, now))
        paused = self.pause is not None
        self.metrics.rate_limit_paused.set(1 if paused else 0)
        until = clock.parse(self.pause.until).timestamp() if self.pause else 0
        self.metrics.rate_limit_paused_until.set(until)

    def _transition(self, report: FoldReport) -> None:
        """One log line and one count per company that changed state."""
        before = report.before or "none"
        self.metrics.transitions.labels(before, report.after).inc()
        log.info(
            "company %s: %s -> %s (%s)",
            report.company_id,
            before,
            report.after,
            report.cause or f"{report.events} events",
            extra={
                "company_id": report.company_id,
                "company_name": report.name,
                "from_state": before,
                "to_state": report.after,
                "cause": report.cause,
                "events": report.events,
            },
        )

    async def _start_due_effects(self) -> None:
        """Claim the due effects the folds did not (retries, a claim expired, an effect of a
        company busy then), one per company not busy, in one write; then start them."""
        now = clock.now()
        due = await self._read(lambda reads: reads.due_effects(now))
        due = [effect for effect in due if effect.company_id not in self._busy]
        if due:
            claim = self._claim_all(self.pause)
            self._start(await self.writer.call(lambda store: claim(store, due)))

    def _start(self, claimed: list[Effect]) -> None:
        """Carry out the claimed effects, each in a task of its own."""
        for effect in claimed:
            self._busy.add(effect.company_id)
            task = asyncio.create_task(self._carry_out(effect))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _claim_all(
        self, pause: RateLimitPause | None
    ) -> Callable[[Store, list[Effect]], list[Effect]]:
        """Of due effects (the longest due first), claim one per company, in the caller's
        transaction; the non-urgent ones a rate-limit pause holds back are postponed instead.
        Returns the effects claimed: not those another worker holds, or that are closed. Each
        claim is its own conditional UPDATE; all of them share one commit.

        A claim lasts for its attempt and for its wait for a free slot: those claimed beyond
        the slots wait for the attempts before them (one claim's length per round of slots).
        (On PostgreSQL the lock alone would keep others off it, but an expired claim still
        locked would be listed as due by the other instances at every poll.)
        """
        attempt = claim_seconds(self.settings)
        slots = self.settings.worker_concurrency

        def claim(store: Store, due: list[Effect]) -> list[Effect]:
            now = clock.now()
            claimed: list[Effect] = []
            companies: set[str] = set()
            for effect in due:
                if effect.company_id in companies:
                    continue
                rounds = 1 + (len(self._tasks) + len(claimed)) // slots
                until = clock.after(attempt * rounds)
                if not store.claim_effect(effect.id, self.owner, until, now):
                    continue
                if pause is not None and effect.kind in ratelimits.NON_URGENT:
                    # Claimed first, so that only a free intent is put off (the postponement
                    # releases the claim).
                    self._postpone(effect, pause)(store)
                    continue
                claimed.append(effect)
                companies.add(effect.company_id)
            return claimed

        return claim

    def _postpone(self, effect: Effect, pause: RateLimitPause) -> Callable[[Store], None]:
        """A non-urgent intent (claimed) waits for the end of Codat's rate-limit pause."""
        error = f"postponed: non-urgent Codat calls are {ratelimits.describe(pause)}"
        log.info("company %s: %s %s", effect.company_id, effect.kind, error)

        def postpone(store: Store) -> None:
            store.retry_effect(
                effect.id,
                error=error,
                next_attempt_at=pause.until,
                now=clock.now(),
                owner=self.owner,
            )

        return postpone

    async def _carry_out(self, effect: Effect) -> None:
        try:
            await self._attempt(effect)
        except Exception as error:
            if is_unavailable(error):
                # Its result was not recorded: the effect stays pending, and is tried again
                # (look before create) once the store is back.
                log.warning(
                    "effect %d for company %s: not recorded, the store is unavailable: %s",
                    effect.id,
                    effect.company_id,
                    error,
                )
            else:
                log.exception(
                    "effect %d for company %s failed unexpectedly", effect.id, effect.company_id
                )
        finally:
            self._busy.discard(effect.company_id)
            self.effects_run += 1
            self.wake()

    async def _attempt(self, effect: Effect) -> None:
        # The slot is held for the Codat calls; the company stays busy until the result is
        # recorded, so a second attempt for it cannot start before.
        done = await attempt_and_record(
            self.writer, self.codat, effect, self.settings, calls=self._slots, owner=self.owner
        )
        result = "retry" if done.status == EFFECT_PENDING else done.status
        self.metrics.command_attempts.labels(effect.kind, result).inc()
        created = effect.kind == CREATE_PARTNER_EXPENSE_CONNECTION and done.status == EFFECT_DONE
        if created and done.note in ("created", "adopted"):
            self.metrics.partner_connections.labels(done.note).inc()


def _notice_is_news(reads: WorkerReads) -> bool:
    """Whether the newest rate-limit notice is newer than the pause applied last."""
    notice = reads.newest_rate_limit_notice()
    if notice is None:
        return False
    stored = reads.rate_limit_pause()
    return stored is None or (stored.notice_at or "") < notice.generated_date


def _pause_of(reads: WorkerReads, now: str) -> RateLimitPause | None:
    return reads.rate_limit_pause(now)

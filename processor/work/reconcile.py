"""Reconciliation: compare stored state with Codat's truth and record what differs.

Codat gives up on a webhook after about 28 hours and disables an endpoint after 5 days of
failures; a sweep heals what was never delivered. Differences are recorded as synthetic events
(`source: reconcile`) that the handlers apply like any other.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from handlers.events import SourceType
from handlers.state import STATES, CompanyState, OnboardingState
from handlers.syncs import SYNC_HEALTHS, SyncRecord, sync_health
from handlers.transitions import (
    COMPANY_DELETED,
    CONNECTION_DELETED,
    CONNECTION_OBSERVED,
    SYNC_OBSERVED,
)
from processor import clock
from processor.codat.client import CodatClient, CodatError
from processor.metrics import Metrics
from processor.work import ratelimits
from processor.work.configuration import observe_configuration, observed_event
from processor.work.effects import Writes
from processor.work.folding import fold_pending, load_state
from processor.work.syncs import observed_sync
from processor.work.synthetic import about_connection, synthetic_event
from store import NewEvent, Page, RateLimitPause, Store

log = logging.getLogger(__name__)
READY_RECHECK = timedelta(days=1)
# Checked once a day, not every sweep: nothing is expected to change there.
SETTLED_STATES = frozenset({OnboardingState.READY, OnboardingState.CONFIGURED})
# Codat's configuration is read in these: an app may set it (or clear it) in Codat directly.
CONFIGURATION_STATES = frozenset(
    {OnboardingState.AWAITING_CONFIGURATION, OnboardingState.CONFIGURED}
)
# A configured company's latest sync is read from Codat at most once a day (and on demand).
SYNC_RECHECK = timedelta(days=1)
FIRST_SWEEP_AFTER = 1.0
# A pause this short (a 429's Retry-After) is waited out, a few times per sweep at most.
MAX_WAIT_SECONDS = 60.0
MAX_WAITS = 5
T = TypeVar("T")


@dataclass
class Sweep:
    """What one reconciliation did; `paused` when Codat's rate limit stopped it."""

    checked: int = 0
    corrected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    syncs_checked: int = 0
    paused: RateLimitPause | None = None


class RateLimited(Exception):
    """Codat's rate limit stopped a reconciliation: the pause is in the store for everyone."""

    def __init__(self, pause: RateLimitPause) -> None:
        super().__init__(ratelimits.describe(pause))
        self.pause = pause


def due_companies(store: Store, now: str) -> list[str]:
    """Companies not ready, configured or deleted, and ready or configured ones not checked
    for a day."""
    stale_before = clock.format_datetime(clock.parse(now) - READY_RECHECK)
    due = []
    for state in STATES:
        if state == OnboardingState.DELETED:
            continue
        after = None
        while True:
            page = store.companies(state=state, limit=500, after=after)
            for row in page.companies:
                if state not in SETTLED_STATES or (row.checked_at or "") < stale_before:
                    due.append(row.company_id)
            if page.next_after is None:
                break
            after = page.next_after
    return due


def sync_due_companies(store: Store, now: str) -> list[str]:
    """Configured companies whose latest sync was not read from Codat for a day (or ever)."""
    stale_before = clock.format_datetime(clock.parse(now) - SYNC_RECHECK)
    due: list[str] = []
    after = None
    while True:
        page = store.companies(state=OnboardingState.CONFIGURED, limit=500, after=after)
        ids = [row.company_id for row in page.companies]
        checks = store.sync_checks(ids)
        due += [i for i in ids if checks.get(i, "") < stale_before]
        if page.next_after is None:
            return due
        after = page.next_after


# Companies judged per write-queue call: a page takes a few tens of milliseconds on the loop.
HEALTH_PAGE = 200


async def sync_health_counts(writer: Writes, silent_after: float) -> dict[str, int]:
    """Companies by the verdict on their syncs (healthy, failing, silent): those configured or
    that reported a sync, deleted ones left out. Page by page, so webhooks are not held up."""
    counts = dict.fromkeys(SYNC_HEALTHS, 0)
    for state_name in STATES:
        if state_name == OnboardingState.DELETED:
            continue
        after: str | None = None
        while True:
            page = await writer.call(_companies_page(state_name, after))
            now = clock.now()
            for row in page.companies:
                verdict = _health(CompanyState.from_dict(row.data), now, silent_after)
                if verdict is not None:
                    counts[verdict] += 1
            if page.next_after is None:
                break
            after = page.next_after
    return counts


def _companies_page(state: str, after: str | None) -> Callable[[Store], Page]:
    return lambda store: store.companies(state=state, limit=HEALTH_PAGE, after=after)


def _health(state: CompanyState, now: str, silent_after: float) -> str | None:
    configured = state.state == OnboardingState.CONFIGURED and state.configuration is not None
    since = state.configuration.checked_at if configured and state.configuration else None
    return sync_health(state.latest_sync, since, now, silent_after)


async def reconcile(
    writer: Writes,
    codat: CodatClient,
    company_ids: list[str],
    *,
    syncs: Collection[str] = (),
    pause: float = 0.0,
    metrics: Metrics | None = None,
) -> Sweep:
    """Check each company against Codat, then read the latest sync of each of `syncs`; record
    a synthetic event where they differ. Stops, as every non-urgent call does, while Codat's
    rate limit pauses them (`Sweep.paused`)."""
    sweep = Sweep()
    work = [(company_id, False) for company_id in company_ids]
    work += [(company_id, True) for company_id in syncs]
    waits = 0
    while work:
        company_id, sync = work[0]
        paused = await writer.call(lambda store: ratelimits.refresh(store, clock.now()))
        try:
            if paused is not None:
                raise RateLimited(paused)
            if sync:
                differences = await _check_sync(writer, codat, company_id)
                sweep.syncs_checked += 1
            else:
                differences = await _check(writer, codat, company_id)
                sweep.checked += 1
        except RateLimited as limited:
            # A short pause (a 429's Retry-After) is waited out; a long one stops the sweep.
            left = _seconds_left(limited.pause)
            if left > MAX_WAIT_SECONDS or waits >= MAX_WAITS:
                sweep.paused = limited.pause
                break
            waits += 1
            log.info("reconciliation waits %.1f s: %s", left, limited)
            await asyncio.sleep(left)
            continue
        except CodatError as error:
            sweep.errors.append(f"{company_id}: {error}")
            work.pop(0)
            continue
        work.pop(0)
        if differences and company_id not in sweep.corrected:
            sweep.corrected.append(company_id)
        if pause:
            await asyncio.sleep(pause)
    if metrics is not None:
        metrics.reconciliations.inc()
        metrics.corrections.inc(len(sweep.corrected))
    return sweep


def _seconds_left(pause: RateLimitPause) -> float:
    return max(0.0, (clock.parse(pause.until) - clock.parse(clock.now())).total_seconds())


async def _check_sync(writer: Writes, codat: CodatClient, company_id: str) -> int:
    """Codat's latest sync of the company: recorded when it is unknown here or its outcome
    differs (a missed or lost webhook)."""
    try:
        status: dict[str, Any] | None = await _with_rate_limit(
            writer, lambda: codat.get_latest_sync_status(company_id), "the latest sync status"
        )
    except CodatError as error:
        if error.status != 404:
            raise
        status = None  # no sync yet (or the company is gone: the connection check says so)
    observed = observed_sync(status) if status is not None else None

    def write(store: Store) -> int:
        now = clock.now()
        events = []
        if observed is not None and _sync_differs(store, company_id, observed):
            events.append(_sync_observed(company_id, observed, status))
            store.append_events(events)
            fold_pending(store, company_id, now)
        store.mark_sync_checked(company_id, now)
        return len(events)

    return await writer.call(write)


def _sync_differs(store: Store, company_id: str, observed: dict[str, Any]) -> bool:
    row = store.sync_rows(company_id, [observed["syncId"]]).get(observed["syncId"])
    if row is None:
        return True
    known = SyncRecord.from_dict(row.data)
    return observed["outcome"] is not None and known.outcome != observed["outcome"]


def _sync_observed(
    company_id: str, observed: dict[str, Any], status: dict[str, Any] | None
) -> NewEvent:
    return synthetic_event(
        message_id=f"reconcile:{company_id}:{uuid.uuid4().hex}",
        event_type=SYNC_OBSERVED,
        source="reconcile",
        company_id=company_id,
        fields={"sync": observed, "note": "found by reconciliation"},
        body={"eventType": SYNC_OBSERVED, "codat": status},
    )


async def _check(writer: Writes, codat: CodatClient, company_id: str) -> int:
    state = await writer.call(lambda store: load_state(store, company_id))
    # What Codat answers is dated when it was asked, not when the answer came: a webhook
    # generated while the listing was under way is newer, and wins over it.
    asked_at = clock.now()
    try:
        connections = await _with_rate_limit(
            writer, lambda: codat.list_connections(company_id), "the connections listing"
        )
    except CodatError as error:
        if error.status != 404:
            raise
        deleted = _synthetic(company_id, COMPANY_DELETED, None, asked_at)
        events = [] if state and state.deleted else [deleted]
        return await _record(writer, company_id, events)
    known = state or CompanyState(company_id=company_id)
    events = _differences(known, connections, asked_at)
    if known.state in CONFIGURATION_STATES:
        ids = await _with_rate_limit(
            writer, lambda: observe_configuration(codat, company_id), "the configuration"
        )
        if _configuration_differs(known, ids):
            events.append(observed_event(company_id, ids, "reconcile", "found by reconciliation"))
    return await _record(writer, company_id, events)


def _configuration_differs(state: CompanyState, ids: dict[str, str]) -> bool:
    stored = state.configuration
    if stored is None:
        return True  # never read: record what Codat holds, set or not
    known = {"bankAccount": stored.bank_account, "supplier": stored.supplier}
    known["customer"] = stored.customer
    return {name: value for name, value in known.items() if value} != ids


def _differences(
    state: CompanyState, connections: list[dict[str, Any]], asked_at: str
) -> list[NewEvent]:
    company_id = state.company_id
    events = []
    accounting = _newest(
        c for c in connections if c.get("sourceType") in (SourceType.ACCOUNTING, None)
    )
    stored = state.accounting_connection
    if accounting is not None:
        if stored is None or stored.id != accounting["id"] or stored.status != accounting["status"]:
            events.append(_synthetic(company_id, CONNECTION_OBSERVED, accounting, asked_at))
    elif stored is not None:
        gone = {"id": stored.id, "status": ""}
        events.append(_synthetic(company_id, CONNECTION_DELETED, gone, asked_at))
    expense = _newest(c for c in connections if c.get("sourceType") == SourceType.EXPENSE)
    known = state.expense_connection
    if expense is not None and (known is None or known.id != expense["id"]):
        events.append(_synthetic(company_id, CONNECTION_OBSERVED, expense, asked_at))
    return events


def _newest(connections: Any) -> dict[str, Any] | None:
    found = sorted(connections, key=lambda c: str(c.get("created") or ""))
    return found[-1] if found else None


def _synthetic(
    company_id: str, event_type: str, connection: dict[str, Any] | None, asked_at: str
) -> NewEvent:
    return synthetic_event(
        message_id=f"reconcile:{company_id}:{uuid.uuid4().hex}",
        event_type=event_type,
        source="reconcile",
        company_id=company_id,
        fields=about_connection(connection),
        body={"eventType": event_type, "codat": connection},
        generated_date=asked_at,
    )


async def _record(writer: Writes, company_id: str, events: list[NewEvent]) -> int:
    def write(store: Store) -> int:
        now = clock.now()
        if events:
            store.append_events(events)
            fold_pending(store, company_id, now)
        store.mark_checked(company_id, now)
        return len(events)

    return await writer.call(write)


async def _with_rate_limit(writer: Writes, call: Callable[[], Awaitable[T]], what: str) -> T:
    """A call that a 429 turns into a pause of every non-urgent call (shared in the store)."""
    try:
        return await call()
    except CodatError as error:
        if error.status != 429:
            raise
        seconds = error.retry_after
        pause = await writer.call(
            lambda store: ratelimits.pause_for_429(store, seconds, what, clock.now())
        )
        raise RateLimited(pause) from error


SWEEP_TASK = "reconcile"


async def _sweep_if_leader(
    writer: Writes, codat: CodatClient, metrics: Metrics | None, silent_after: float | None
) -> Sweep | None:
    """One sweep, unless another instance on the same store is running one (then None)."""
    if not await writer.call(lambda store: store.lock_task(SWEEP_TASK)):
        return None
    try:
        due = await writer.call(lambda store: due_companies(store, clock.now()))
        syncs = await writer.call(lambda store: sync_due_companies(store, clock.now()))
        sweep = await reconcile(writer, codat, due, syncs=syncs, metrics=metrics)
        if metrics is not None and silent_after is not None:
            counts = await sync_health_counts(writer, silent_after)
            for verdict, count in counts.items():
                metrics.sync_health.labels(verdict).set(count)
        return sweep
    finally:
        await writer.call(lambda store: store.unlock_task(SWEEP_TASK))


async def sweep_periodically(
    writer: Writes,
    codat: CodatClient,
    interval: float,
    *,
    first_after: float = FIRST_SWEEP_AFTER,
    metrics: Metrics | None = None,
    silent_after: float | None = None,
) -> None:
    """The sweep inside `serve`: shortly after start-up, then every `interval` seconds.

    The first sweep comes soon, not an interval later: a customer who authorized while `serve`
    was down would otherwise wait up to `interval` for the webhook Codat may have given up on.
    """
    delay = min(first_after, interval)
    while True:
        await asyncio.sleep(delay)
        delay = interval
        try:
            sweep = await _sweep_if_leader(writer, codat, metrics, silent_after)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciliation sweep failed; next one in %.0f s", interval)
            continue
        if sweep is None:
            log.debug("reconciliation: another instance is sweeping; next try in %.0f s", interval)
            continue
        if sweep.paused is not None:
            log.info("reconciliation %s", ratelimits.describe(sweep.paused))
        if sweep.corrected or sweep.errors:
            log.info(
                "reconciliation: %d checked, %d syncs read, %d corrected, %d errors",
                sweep.checked,
                sweep.syncs_checked,
                len(sweep.corrected),
                len(sweep.errors),
            )

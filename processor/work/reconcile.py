"""Reconciliation: compare stored state with Codat's truth and record what differs.

Codat gives up on a webhook after about 28 hours and disables an endpoint after 5 days of
failures; a sweep heals what was never delivered. Differences are recorded as synthetic events
(`source: reconcile`) that the handlers apply like any other.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from handlers.events import SourceType
from handlers.state import STATES, CompanyState, OnboardingState
from handlers.transitions import COMPANY_DELETED, CONNECTION_DELETED, CONNECTION_OBSERVED
from processor import clock
from processor.codat.client import CodatClient, CodatError
from processor.work.configuration import observe_configuration, observed_event
from processor.work.effects import Writes
from processor.work.folding import fold_pending, load_state
from processor.work.synthetic import about_connection, synthetic_event
from store import NewEvent, Store

log = logging.getLogger(__name__)
READY_RECHECK = timedelta(days=1)
# Checked once a day, not every sweep: nothing is expected to change there.
SETTLED_STATES = frozenset({OnboardingState.READY, OnboardingState.CONFIGURED})
# Codat's configuration is read in these: an app may set it (or clear it) in Codat directly.
CONFIGURATION_STATES = frozenset(
    {OnboardingState.AWAITING_CONFIGURATION, OnboardingState.CONFIGURED}
)
MAX_RATE_LIMIT_WAITS = 5
FIRST_SWEEP_AFTER = 1.0


@dataclass
class Sweep:
    """What one reconciliation did."""

    checked: int = 0
    corrected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


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


async def reconcile(
    writer: Writes, codat: CodatClient, company_ids: list[str], *, pause: float = 0.0
) -> Sweep:
    """Check each company against Codat; record a synthetic event where they differ."""
    sweep = Sweep()
    for company_id in company_ids:
        try:
            differences = await _check(writer, codat, company_id)
        except CodatError as error:
            sweep.errors.append(f"{company_id}: {error}")
            continue
        sweep.checked += 1
        if differences:
            sweep.corrected.append(company_id)
        if pause:
            await asyncio.sleep(pause)
    return sweep


async def _check(writer: Writes, codat: CodatClient, company_id: str) -> int:
    state = await writer.call(lambda store: load_state(store, company_id))
    try:
        connections = await _with_rate_limit(codat, lambda: codat.list_connections(company_id))
    except CodatError as error:
        if error.status != 404:
            raise
        events = [] if state and state.deleted else [_synthetic(company_id, COMPANY_DELETED, None)]
        return await _record(writer, company_id, events)
    known = state or CompanyState(company_id=company_id)
    events = _differences(known, connections)
    if known.state in CONFIGURATION_STATES:
        ids = await _with_rate_limit(codat, lambda: observe_configuration(codat, company_id))
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


def _differences(state: CompanyState, connections: list[dict[str, Any]]) -> list[NewEvent]:
    company_id = state.company_id
    events = []
    accounting = _newest(
        c for c in connections if c.get("sourceType") in (SourceType.ACCOUNTING, None)
    )
    stored = state.accounting_connection
    if accounting is not None:
        if stored is None or stored.id != accounting["id"] or stored.status != accounting["status"]:
            events.append(_synthetic(company_id, CONNECTION_OBSERVED, accounting))
    elif stored is not None:
        events.append(_synthetic(company_id, CONNECTION_DELETED, {"id": stored.id, "status": ""}))
    expense = _newest(c for c in connections if c.get("sourceType") == SourceType.EXPENSE)
    known = state.expense_connection
    if expense is not None and (known is None or known.id != expense["id"]):
        events.append(_synthetic(company_id, CONNECTION_OBSERVED, expense))
    return events


def _newest(connections: Any) -> dict[str, Any] | None:
    found = sorted(connections, key=lambda c: str(c.get("created") or ""))
    return found[-1] if found else None


def _synthetic(company_id: str, event_type: str, connection: dict[str, Any] | None) -> NewEvent:
    return synthetic_event(
        message_id=f"reconcile:{company_id}:{uuid.uuid4().hex}",
        event_type=event_type,
        source="reconcile",
        company_id=company_id,
        fields=about_connection(connection),
        body={"eventType": event_type, "codat": connection},
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


async def _with_rate_limit(codat: CodatClient, call: Any) -> Any:
    """Wait out Codat's rate limit (429 with Retry-After) a few times before giving up."""
    for _ in range(MAX_RATE_LIMIT_WAITS):
        remaining = codat.rate_limit.remaining
        if remaining is not None and remaining <= 1:
            await asyncio.sleep(1.0)
        try:
            return await call()
        except CodatError as error:
            if error.status != 429:
                raise
            wait = min(error.retry_after or 1.0, 60.0)
            log.info("Codat rate limit reached; waiting %.1f s", wait)
            await asyncio.sleep(wait)
    return await call()


SWEEP_TASK = "reconcile"


async def _sweep_if_leader(writer: Writes, codat: CodatClient) -> Sweep | None:
    """One sweep, unless another instance on the same store is running one (then None)."""
    if not await writer.call(lambda store: store.lock_task(SWEEP_TASK)):
        return None
    try:
        due = await writer.call(lambda store: due_companies(store, clock.now()))
        return await reconcile(writer, codat, due)
    finally:
        await writer.call(lambda store: store.unlock_task(SWEEP_TASK))


async def sweep_periodically(
    writer: Writes, codat: CodatClient, interval: float, *, first_after: float = FIRST_SWEEP_AFTER
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
            sweep = await _sweep_if_leader(writer, codat)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciliation sweep failed; next one in %.0f s", interval)
            continue
        if sweep is None:
            log.debug("reconciliation: another instance is sweeping; next try in %.0f s", interval)
            continue
        if sweep.corrected or sweep.errors:
            log.info(
                "reconciliation: %d checked, %d corrected, %d errors",
                sweep.checked,
                len(sweep.corrected),
                len(sweep.errors),
            )

"""Folding stored events into company state: the one code path for live processing and replay.

These functions run inside a store transaction (on the writer thread, or in a replay); they read
the log, apply the pure handlers and write the new state and the intents it calls for.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from handlers.commands import Command, needed_commands, still_needed
from handlers.copies import build
from handlers.events import Connection, Event
from handlers.state import CompanyState, OnboardingState
from handlers.transitions import APPLIED, fold, initial_state
from processor.work.syncs import record_syncs, sync_report
from store import EFFECT_CANCELLED, CompanyRow, Effect, Store, StoredEvent, is_unavailable
from store.records import LoggedEvent

log = logging.getLogger(__name__)
INTENT_STATES = frozenset({OnboardingState.LINKED, OnboardingState.AWAITING_CONFIGURATION})


@dataclass
class FoldReport:
    """What folding one company did."""

    company_id: str
    before: str | None
    after: str
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    opened_effects: list[int] = field(default_factory=list)
    name: str | None = None
    # The type of the last event that changed the state (what moved the company, for logs).
    cause: str | None = None
    # Intents that were open before the fold and still are (a rebuild leaves them to run).
    kept_effects: int = 0


def to_event(stored: StoredEvent | LoggedEvent) -> Event:
    """A stored event as the handlers see it."""
    fields = stored.fields
    get = fields.get
    connection = get("connection")
    configuration = get("configuration")
    connection_ids = get("connection_ids")
    # Every field given: `build` makes the same Event as Event(...) does, in less time.
    return build(
        Event,
        {
            "event_type": stored.event_type,
            "company_id": stored.company_id or "",
            "generated_date": stored.generated_date,
            "company_name": get("company_name"),
            # A connection event that names no connection cannot be about the one we follow.
            "connection": _connection(connection)
            if isinstance(connection, dict) and connection.get("id")
            else None,
            "error": get("error"),
            "source": stored.source,
            "details": _details(configuration) if configuration else {},
            "connection_ids": tuple(str(i) for i in connection_ids if i) if connection_ids else (),
            "sync": sync_report(stored) if "sync" in fields else None,
        },
    )


def _details(data: Any) -> dict[str, str]:
    """The ids of an observed configuration; anything but a non-empty string means not set."""
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str) and v}


def load_state(store: Store, company_id: str) -> CompanyState | None:
    row = store.company(company_id)
    return CompanyState.from_dict(row.data) if row is not None else None


@dataclass
class _Fold:
    """One company's fold, computed before anything is written."""

    report: FoldReport
    final: CompanyState
    outcomes: list[tuple[int, str]]
    causes: list[tuple[Command, int | None]]
    # The events that report a sync, with their outcomes (for the table of syncs).
    reported: list[tuple[StoredEvent, str]] = field(default_factory=list)

    @property
    def settles_effects(self) -> bool:
        # Intents only open in `linked` and `awaiting_configuration`: nothing to open or
        # close unless the fold touched one of them.
        touched = {self.report.before, self.report.after} & INTENT_STATES
        return bool(self.causes or touched)


def _fold(company_id: str, row: CompanyRow | None, pending: list[StoredEvent]) -> _Fold:
    """Apply the handlers to a company's pending events (no store access)."""
    current = CompanyState.from_dict(row.data) if row is not None else None
    state = current or initial_state(company_id)
    final, steps = fold(state, [to_event(stored) for stored in pending])
    report = FoldReport(company_id, current.state if current else None, final.state)
    report.events = len(pending)
    report.name = final.name
    for stored, step in zip(pending, steps, strict=True):
        report.outcomes[step.outcome] = report.outcomes.get(step.outcome, 0) + 1
        if step.outcome == APPLIED:
            report.cause = stored.event_type
    causes: list[tuple[Command, int | None]] = [
        (command, stored.seq)
        for stored, step in zip(pending, steps, strict=True)
        for command in step.commands
        if still_needed(final, command)
    ]
    outcomes = [(e.seq, s.outcome) for e, s in zip(pending, steps, strict=True)]
    reported = [(e, s.outcome) for e, s in zip(pending, steps, strict=True) if "sync" in e.fields]
    return _Fold(report, final, outcomes, causes, reported)


def _write(store: Store, folds: Sequence[_Fold], now: str) -> None:
    """Record folds: the events' outcomes, the new states, the intents they call for."""
    store.mark_folded([outcome for done in folds for outcome in done.outcomes], now)
    store.save_companies(
        [(d.final.company_id, d.final.state, d.final.to_dict()) for d in folds if d.outcomes],
        now,
    )
    for done in folds:
        record_syncs(store, done.final.company_id, done.reported, now)
        if done.settles_effects:
            needed = needed_commands(done.final)
            _settle_effects(store, done.final.company_id, needed, done.causes, now, done.report)


def fold_pending(store: Store, company_id: str, now: str) -> FoldReport:
    """Fold a company's pending events into its stored state and record the intents it needs."""
    store.lock_company(company_id, wait=True)
    done = _fold(company_id, store.company(company_id), store.pending_events(company_id))
    _write(store, [done], now)
    return done.report


def fold_companies(store: Store, company_ids: Sequence[str], now: str) -> list[FoldReport]:
    """Fold several companies in one transaction: one commit (one fsync) serves them all.

    Their rows are read and written in a few statements for the whole batch, not a few per
    company. A company whose fold fails stays pending, so it is tried again and cannot hold
    the others back: if writing the batch fails, it is undone and each company is folded in a
    savepoint of its own. A company another instance is folding right now is skipped: that
    instance folds what is pending.
    """
    locked = store.lock_companies(company_ids)
    if not locked:
        return []
    rows = store.companies_of(locked)
    pending = store.pending_events_of(locked)
    folds = []
    for company_id in locked:
        try:
            folds.append(_fold(company_id, rows.get(company_id), pending[company_id]))
        except Exception:
            log.exception("folding company %s failed; its events stay pending", company_id)
    try:
        with store.savepoint():
            _write(store, folds, now)
        return [done.report for done in folds]
    except Exception as error:
        if is_unavailable(error):
            raise
        log.warning("writing %d folds at once failed (%s); one by one now", len(folds), error)
    reports = []
    for done in folds:
        company_id = done.report.company_id
        try:
            with store.savepoint():
                reports.append(fold_pending(store, company_id, now))
        except Exception:
            log.exception("folding company %s failed; its events stay pending", company_id)
    return reports


def rebuild(store: Store, company_id: str, now: str) -> FoldReport:
    """Fold a company's whole log from an empty state, as if every event arrived again."""
    return rebuild_companies(store, [company_id], now)[0]


def rebuild_companies(
    store: Store, company_ids: Sequence[str], now: str, *, key_range: bool = False
) -> list[FoldReport]:
    """`rebuild` of several companies in one transaction, reading and writing in bulk.

    The logs, states and open intents of the whole batch are read in a few statements; only
    what the rebuild changes is written: outcomes that differ, states that differ, the events
    that were pending, and the intents to open or close. `key_range`: the companies are a page
    of every company, read as one range of ids (see `Store.replay_logs_of`).
    """
    for company_id in sorted(company_ids):  # one order for every rebuild: no deadlock
        store.lock_company(company_id, wait=True)
    return apply_rebuilds(store, plan_rebuilds(store, company_ids, key_range=key_range), now)


@dataclass
class Rebuilt:
    """One company's rebuild, computed from its log and stored state, nothing written yet:
    what `apply_rebuilds` writes. Small, so that a replay's helper process can hand it over."""

    report: FoldReport
    # The commands the rebuilt state calls for, and the event they are dated by (the last).
    needed: list[Command]
    last_seq: int | None
    # Folded events whose outcome the rebuild changes, and the pending ones it folds now.
    outcomes: list[tuple[int, str]]
    folded_now: list[tuple[int, str]]
    # The rebuilt state, when it differs from the stored one.
    state: tuple[str, str, dict[str, Any]] | None
    # The events that report a sync, with their outcomes (for the table of syncs).
    reported: list[tuple[LoggedEvent, str]]
    # The company's open intents, when read with the plan (see `plan_rebuilds`).
    open_effects: list[Effect] | None = None


def plan_rebuilds(
    store: Store, company_ids: Sequence[str], *, key_range: bool = False, effects: bool = False
) -> list[Rebuilt]:
    """Each company's log folded from an empty state, and compared with its stored state:
    reads only (two statements for the batch). `effects`: the open intents are read too (a
    third), for a plan applied only if nothing was written since it was read."""
    stored_states = store.replay_states_of(company_ids, key_range=key_range)
    logs = store.replay_logs_of(company_ids, key_range=key_range)
    open_effects = store.open_effects_of(company_ids) if effects else None
    found = []
    for company_id in company_ids:
        folded, pending = logs[company_id]
        events = folded + pending if pending else folded
        handled = [to_event(stored) for stored in events]
        final, steps = fold(initial_state(company_id), handled)
        after = final.state
        stored_state = stored_states.get(company_id)
        report = FoldReport(company_id, stored_state[0] if stored_state else None, after)
        report.events = len(events)
        results = [step.outcome for step in steps]
        outcomes = [
            (stored.seq, outcome)
            for stored, outcome in zip(folded, results, strict=False)
            if stored.outcome != outcome
        ]
        folded_now = (
            [(e.seq, outcome) for e, outcome in zip(pending, results[len(folded) :], strict=True)]
            if pending
            else []
        )
        counts = report.outcomes
        for outcome in results:
            counts[outcome] = counts.get(outcome, 0) + 1
        state = None
        reported: list[tuple[LoggedEvent, str]] = []
        if events:
            data = final.to_dict()
            if stored_state is None or stored_state[0] != after or stored_state[1] != data:
                state = (company_id, after, data)
            # The events that name a sync (their Event has one when it is well formed; the
            # others record nothing), with their outcomes, for the table of syncs.
            reported = [
                (e, outcome)
                for e, event, outcome in zip(events, handled, results, strict=True)
                if event.sync is not None
            ]
        last = events[-1].seq if events else None
        found.append(
            Rebuilt(
                report,
                needed_commands(final),
                last,
                outcomes,
                folded_now,
                state,
                reported,
                open_effects[company_id] if open_effects is not None else None,
            )
        )
    return found


def apply_rebuilds(store: Store, rebuilt: Sequence[Rebuilt], now: str) -> list[FoldReport]:
    """Write what `plan_rebuilds` found (in the caller's transaction), and open or close the
    intents the rebuilt states call for (the open ones read here, in the transaction, unless
    the plan read them)."""
    unread = [done.report.company_id for done in rebuilt if done.open_effects is None]
    open_effects = store.open_effects_of(unread) if unread else {}
    for done in rebuilt:
        company_id = done.report.company_id
        if done.reported:
            record_syncs(store, company_id, done.reported, now)
        causes = [(command, done.last_seq) for command in done.needed]
        effects = done.open_effects if done.open_effects is not None else open_effects[company_id]
        if causes or effects:
            _settle_effects(store, company_id, done.needed, causes, now, done.report, effects)
    store.set_outcomes([outcome for done in rebuilt for outcome in done.outcomes])
    store.mark_folded([outcome for done in rebuilt for outcome in done.folded_now], now)
    store.save_companies([done.state for done in rebuilt if done.state is not None], now)
    return [done.report for done in rebuilt]


def _settle_effects(
    store: Store,
    company_id: str,
    needed: Sequence[Command],
    causes: Sequence[tuple[Command, int | None]],
    now: str,
    report: FoldReport,
    open_effects: Sequence[Effect] | None = None,
) -> None:
    """Open the intents the final state calls for (`needed`); close those it no longer does."""
    wanted = {(c.kind, c.accounting_connection_id) for c in needed}
    open_kinds = set()
    if open_effects is None:
        open_effects = store.open_effects(company_id)
    for effect in open_effects:
        if (effect.kind, effect.connection_id) in wanted:
            open_kinds.add(effect.kind)
            report.kept_effects += 1
        else:
            # The state moved on (unlinked, another connection, already ready): drop it.
            store.close_effect(effect.id, EFFECT_CANCELLED, now)
    for command, cause in causes:
        if command.kind in open_kinds:
            continue
        open_kinds.add(command.kind)
        effect_id = store.open_effect(
            company_id=command.company_id,
            kind=command.kind,
            connection_id=command.accounting_connection_id,
            idempotency_key=str(uuid.uuid4()),
            caused_by=cause,
            now=now,
        )
        report.commands.append(command)
        if effect_id is not None:
            report.opened_effects.append(effect_id)


def _connection(data: dict[str, Any]) -> Connection:
    return build(
        Connection,
        {
            "id": str(data.get("id") or ""),
            "status": str(data.get("status") or ""),
            "platform_key": data.get("platform_key"),
            "platform_name": data.get("platform_name"),
            "source_type": data.get("source_type"),
        },
    )

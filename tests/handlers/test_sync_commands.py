"""Fetching a failed sync's transactions: asked for when no report listed them, one at a time."""

from __future__ import annotations

from handlers.commands import FetchSyncTransactions, needed_commands
from handlers.events import Event
from handlers.syncs import FAILED, SUCCESSFUL, SyncReport, SyncTransaction
from handlers.transitions import (
    COMPANY_DELETED,
    SYNC_SUCCESSFUL,
    SYNC_TRANSACTIONS_FETCHED,
    SYNC_UNSUCCESSFUL,
    fold,
    initial_state,
    transition,
)

COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"


def report(
    event_type: str,
    sync_id: str,
    at: str,
    outcome: str | None,
    transactions: tuple[SyncTransaction, ...] | None = None,
    source: str = "webhook",
) -> Event:
    sync = SyncReport(sync_id, at, outcome, transactions)
    return Event(event_type, COMPANY, at, source=source, sync=sync)


FAILING = (SyncTransaction("t-1", "PushError", "Tax rate not found"),)


def test_failed_syncs_without_transactions_are_fetched_oldest_first_one_at_a_time() -> None:
    older = report(SYNC_UNSUCCESSFUL, "s-1", "2026-12-01T10:00:00.0000000Z", FAILED)
    newer = report(SYNC_UNSUCCESSFUL, "s-2", "2026-12-01T11:00:00.0000000Z", FAILED)
    state, steps = fold(initial_state(COMPANY), [newer, older])
    assert [s.commands for s in steps] == [
        (FetchSyncTransactions(COMPANY, "s-2"),),
        (FetchSyncTransactions(COMPANY, "s-1"),),
    ]
    assert needed_commands(state) == [FetchSyncTransactions(COMPANY, "s-1")]
    fetched = report(
        SYNC_TRANSACTIONS_FETCHED, "s-1", "2026-12-01T12:00:00.0000000Z", None, FAILING, "command"
    )
    step = transition(state, fetched)
    assert step.commands == (FetchSyncTransactions(COMPANY, "s-2"),)
    assert step.state.syncs[1].failing == FAILING


def test_listed_or_successful_syncs_and_deleted_companies_ask_for_nothing() -> None:
    listed = report(SYNC_UNSUCCESSFUL, "s-1", "2026-12-01T10:00:00.0000000Z", FAILED, FAILING)
    good = report(SYNC_SUCCESSFUL, "s-2", "2026-12-01T11:00:00.0000000Z", SUCCESSFUL)
    state, steps = fold(initial_state(COMPANY), [listed, good])
    assert [s.commands for s in steps] == [(), ()] and needed_commands(state) == []
    unlisted = report(SYNC_UNSUCCESSFUL, "s-3", "2026-12-01T12:00:00.0000000Z", FAILED)
    gone = Event(COMPANY_DELETED, COMPANY, "2026-12-01T13:00:00.0000000Z")
    state, _ = fold(state, [unlisted, gone])
    assert needed_commands(state) == []

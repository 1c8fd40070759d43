"""The sync health verdict and its sentence, from a company's state (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from handlers.events import Connection
from handlers.state import CompanyState, ExpensesConfiguration
from handlers.syncs import SyncRecord, SyncTransaction, sync_health
from processor import clock
from processor.http.documents import Health, sync_summary
from processor.http.explain import why

NOW = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)
CONFIGURED = CompanyState(
    company_id="c-1",
    accounting_connection=Connection("acc-1", "Linked"),
    expense_connection=Connection("exp-1", "Linked"),
    data_reads={"acc-1": "2026-11-20T10:00:00.0000000Z"},
    configuration=ExpensesConfiguration("b", "s", "c", "2026-11-21T10:00:00.0000000Z"),
)
FAILED = SyncRecord(
    "sync-2",
    "2026-12-01T10:02:00.0000000Z",
    "failed",
    "0#x",
    (
        SyncTransaction("t-1", "Completed"),
        SyncTransaction("t-2", "Failed", "Supplier is archived in Xero"),
    ),
    "0#x",
)
OK = SyncRecord("sync-1", "2026-12-01T09:00:00.0000000Z", "successful", "0#w", None, "")


def document(state: CompanyState) -> dict[str, object]:
    return {
        "id": state.company_id,
        "state": state.state,
        "failed": [],
        "pending": [],
        "updatedAt": None,
        "accountingConnection": None,
        "configuration": {"checkedAt": state.configuration and state.configuration.checked_at},
        "sync": sync_summary(state, Health(NOW)),
    }


def test_the_newest_sync_failed_is_failing_with_its_reason() -> None:
    state = replace(CONFIGURED, syncs=(FAILED, OK))
    assert sync_summary(state, Health(NOW))["health"] == "failing"
    assert why(document(state), NOW) == (
        "The last expense sync (2026-12-01 10:02) failed for 1 of 2 transactions: "
        "'Supplier is archived in Xero'; the one before succeeded."
    )


def test_a_configured_company_without_a_recent_sync_is_silent() -> None:
    state = replace(CONFIGURED, syncs=(OK,))
    assert sync_summary(state, Health(NOW))["health"] == "silent"
    assert sync_summary(state, Health(NOW, silent_after=30 * 86400))["health"] == "healthy"
    assert "no expense sync reported since 2026-12-01 09:00" in why(document(state), NOW)
    # Never synced: silent once configured for longer than allowed.
    assert sync_summary(CONFIGURED, Health(NOW))["health"] == "silent"


def test_no_verdict_before_configuration_without_syncs() -> None:
    assert sync_summary(CompanyState("c-2"), Health(NOW))["health"] is None


def test_the_document_gives_the_verdict_of_handlers_sync_health_to_the_microsecond() -> None:
    """One source of the verdict: the document judges as `handlers.syncs.sync_health` does, and
    a silence exactly as long as allowed is not yet silent."""
    week = 7 * 86400.0
    checked = CONFIGURED.configuration.checked_at  # type: ignore[union-attr]
    cases = [
        (CONFIGURED, checked),
        (replace(CONFIGURED, syncs=(OK,)), checked),
        (replace(CONFIGURED, syncs=(FAILED, OK)), checked),
        (replace(CompanyState("c-3"), syncs=(OK,)), None),
        (CompanyState("c-2"), None),
    ]
    for state, configured_since in cases:
        since = state.latest_sync.at if state.latest_sync else checked
        edge = clock.parse(since) + timedelta(seconds=week)
        for now in (edge, edge + timedelta(microseconds=1), NOW):
            verdict = sync_summary(state, Health(now, silent_after=week))["health"]
            expected = sync_health(
                state.latest_sync, configured_since, clock.format_datetime(now), week
            )
            assert verdict == expected, (state.company_id, state.syncs, now)
    never_synced = clock.parse(checked) + timedelta(seconds=week)
    assert sync_summary(CONFIGURED, Health(never_synced, week))["health"] == "healthy"
    later = never_synced + timedelta(microseconds=1)
    assert sync_summary(CONFIGURED, Health(later, week))["health"] == "silent"

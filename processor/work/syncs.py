"""Expense syncs during a fold: reading a stored event's sync, recording each sync's row.

The fold (live, replay or rebuild) hands every sync report it applied to `record_syncs`, in the
same transaction as the new state. Merging is commutative and idempotent (handlers.syncs), so
rebuilding a company from its log leaves its rows as live processing left them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from handlers.syncs import SyncRecord, SyncReport, SyncTransaction, merge_sync, report_key
from handlers.transitions import IGNORED
from processor import clock
from store import ExpenseSyncs, StoredEvent
from store.records import LoggedEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncOutcome:
    """A sync whose outcome or failing transactions a fold recorded, against what was known."""

    company_id: str
    sync_id: str
    outcome: str | None
    before: str | None
    failing: int
    failing_before: int


# The outcomes recorded while a caller collects them (the worker, for its metrics).
_COLLECTED: ContextVar[list[SyncOutcome] | None] = ContextVar("sync_outcomes", default=None)


@contextlib.contextmanager
def collecting_outcomes() -> Iterator[list[SyncOutcome]]:
    """Collect the sync outcomes `record_syncs` records in this block (in this thread)."""
    collected: list[SyncOutcome] = []
    token = _COLLECTED.set(collected)
    try:
        yield collected
    finally:
        _COLLECTED.reset(token)


def sync_report(stored: StoredEvent | LoggedEvent) -> SyncReport | None:
    """The sync an event reports, as intake or the worker recorded it; None if it names none."""
    data = stored.fields.get("sync")
    if not isinstance(data, dict) or not isinstance(data.get("syncId"), str):
        return None
    listed = data.get("transactions")
    at = data.get("at")
    return SyncReport(
        sync_id=data["syncId"],
        # Codat's status answers give the sync's own time; a webhook's is its generatedDate.
        at=at if isinstance(at, str) and at else stored.generated_date,
        outcome=data.get("outcome") if isinstance(data.get("outcome"), str) else None,
        transactions=None if not isinstance(listed, list) else _transactions(listed),
        failure_stage=_text(data.get("failureStage")),
        error=_text(data.get("error")),
    )


def record_syncs(
    store: ExpenseSyncs,
    company_id: str,
    reported: Sequence[tuple[StoredEvent | LoggedEvent, str]],
    now: str,
) -> None:
    """Merge the sync reports among these (event, outcome) pairs into the company's rows."""
    reports = [
        (report, report_key(stored.source, stored.generated_date))
        for stored, outcome in reported
        if outcome != IGNORED and (report := sync_report(stored)) is not None
    ]
    if not reports:
        return
    rows = store.sync_rows(company_id, sorted({report.sync_id for report, _ in reports}))
    merged = {sync_id: SyncRecord.from_dict(row.data) for sync_id, row in rows.items()}
    for report, key in reports:
        merged[report.sync_id] = merge_sync(merged.get(report.sync_id), report, key)
    changed = [
        (sync_id, record.at, record.outcome, record.to_dict())
        for sync_id, record in sorted(merged.items())
        if sync_id not in rows or rows[sync_id].data != record.to_dict()
    ]
    if changed:
        store.save_syncs(company_id, changed, now)
    for sync_id, _, _, _ in changed:
        before = SyncRecord.from_dict(rows[sync_id].data) if sync_id in rows else None
        _outcome(company_id, before, merged[sync_id])


def _outcome(company_id: str, before: SyncRecord | None, after: SyncRecord) -> None:
    """One log line per sync outcome recorded (or changed, or given its failing transactions)."""
    failing_before = len(before.failing) if before is not None else 0
    outcome_before = before.outcome if before is not None else None
    if after.outcome == outcome_before and len(after.failing) == failing_before:
        return
    change = SyncOutcome(
        company_id,
        after.sync_id,
        after.outcome,
        outcome_before,
        len(after.failing),
        failing_before,
    )
    collected = _COLLECTED.get()
    if collected is not None:
        collected.append(change)
    listed = after.transactions
    detail = (
        f"{len(after.failing)} of {len(listed)} transactions failing"
        if listed is not None
        else "transactions not listed"
    )
    first_error = next((t.error for t in after.failing if t.error), None) or after.error
    level = logging.WARNING if after.outcome == "failed" else logging.INFO
    log.log(
        level,
        "company %s: expense sync %s %s (%s)%s",
        company_id,
        after.sync_id,
        after.outcome or "reported",
        detail,
        f": {first_error}" if first_error else "",
        extra={
            "company_id": company_id,
            "sync_id": after.sync_id,
            "outcome": after.outcome,
            "at": after.at,
            "failing_transactions": len(after.failing),
            "transactions": None if listed is None else len(listed),
            "failure_stage": after.failure_stage,
            "error": first_error,
        },
    )


def _transactions(listed: list[Any]) -> tuple[SyncTransaction, ...]:
    return tuple(
        SyncTransaction(
            str(item.get("id") or ""), _text(item.get("status")), _text(item.get("errorMessage"))
        )
        for item in listed
        if isinstance(item, dict)
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- What Codat answers about syncs ------------------------------------------------------------

# Codat publishes the codes of successful syncs only (2000 data pushed, 2040 nothing to push);
# anything from 4000 up is taken for a failure, anything else (in progress, unknown) says
# nothing about the outcome.
SUCCESS_CODES = range(2000, 3000)
FAILURE_FROM = 4000
MAX_FETCHED_TRANSACTIONS = 500


def fetched_sync(sync_id: str, transactions: list[dict[str, Any]]) -> dict[str, Any]:
    """The `sync` field of an event recording a sync's transactions as Codat listed them
    (`transactionId`, `status`, `message`), in the webhook's terms."""
    return {
        "syncId": sync_id,
        "transactions": [
            {
                "id": str(t.get("transactionId") or ""),
                "status": _text(t.get("status")),
                "errorMessage": _text(t.get("message")),
            }
            for t in transactions[:MAX_FETCHED_TRANSACTIONS]
            if isinstance(t, dict)
        ],
    }


def observed_sync(status: dict[str, Any]) -> dict[str, Any] | None:
    """The `sync` field of an event recording Codat's CompanySyncStatus answer (None: it names
    no sync)."""
    sync_id = _text(status.get("syncId"))
    if sync_id is None:
        return None
    code = status.get("syncStatusCode")
    outcome = None
    if isinstance(code, int) and code in SUCCESS_CODES:
        outcome = "successful"
    elif isinstance(code, int) and code >= FAILURE_FROM:
        outcome = "failed"
    error = _text(status.get("errorMessage")) or _text(status.get("syncExceptionMessage"))
    found: dict[str, Any] = {"syncId": sync_id, "outcome": outcome, "error": error}
    at = _text(status.get("syncUtc"))
    if at is not None:
        with contextlib.suppress(clock.InvalidDate):
            found["at"] = clock.normalize(at)
    return found

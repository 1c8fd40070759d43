"""Expense syncs: what each report about one sync says, and how reports about it merge.

Codat reports a sync by webhook (`expenses.sync.successful`/`unsuccessful`, or the legacy
`Sync Completed`/`Sync Failed` bodies) and answers about it on its status endpoints. Reports may
arrive in any order and more than once, so merging is commutative and idempotent: the record of
a sync is the same whatever order its reports came in. Codat's answers (source `command`) win
over webhooks, which CODAT.md calls a hint; among reports of one kind the newest wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.copies import evolve

SUCCESSFUL = "successful"
FAILED = "failed"
SYNC_OUTCOMES = (SUCCESSFUL, FAILED)
# Transaction statuses that mean the transaction did not reach the accounting software: the
# webhook's `PushError`/`Failed`, the status endpoint's `ValidationError`.
FAILING_STATUSES = frozenset({"PushError", "Failed", "ValidationError"})
# The syncs a company's state keeps (newest first); every sync is kept in the store's table.
KEPT_SYNCS = 10


@dataclass(frozen=True)
class SyncTransaction:
    """One transaction of a sync: its id, Codat's status for it and Codat's message."""

    id: str
    status: str | None
    error: str | None = None

    @property
    def failing(self) -> bool:
        return self.status in FAILING_STATUSES


@dataclass(frozen=True)
class SyncReport:
    """What one event says about one sync.

    `outcome` is None when the event says nothing about it (fetched transactions);
    `transactions` is None when the event does not list them (legacy bodies, some webhooks).
    """

    sync_id: str
    at: str
    outcome: str | None = None
    transactions: tuple[SyncTransaction, ...] | None = None
    failure_stage: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SyncRecord:
    """Everything known about one sync, merged from every report about it.

    `at` is the earliest time a report gave for the sync; the two keys say which report the
    outcome and the transactions come from (source rank, then generatedDate).
    """

    sync_id: str
    at: str
    outcome: str | None
    outcome_key: str
    transactions: tuple[SyncTransaction, ...] | None
    transactions_key: str
    failure_stage: str | None = None
    error: str | None = None

    @property
    def failing(self) -> tuple[SyncTransaction, ...]:
        return tuple(t for t in self.transactions or () if t.failing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sync_id": self.sync_id,
            "at": self.at,
            "outcome": self.outcome,
            "outcome_key": self.outcome_key,
            "transactions": None
            if self.transactions is None
            else [{"id": t.id, "status": t.status, "error": t.error} for t in self.transactions],
            "transactions_key": self.transactions_key,
            "failure_stage": self.failure_stage,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyncRecord:
        transactions = data.get("transactions")
        return cls(
            sync_id=data["sync_id"],
            at=data["at"],
            outcome=data.get("outcome"),
            outcome_key=data.get("outcome_key") or "",
            transactions=None
            if transactions is None
            else tuple(
                SyncTransaction(t["id"], t.get("status"), t.get("error")) for t in transactions
            ),
            transactions_key=data.get("transactions_key") or "",
            failure_stage=data.get("failure_stage"),
            error=data.get("error"),
        )


# Reports that are Codat's answers to our own calls (the worker's, reconciliation's).
ANSWER_SOURCES = frozenset({"command", "reconcile"})
HEALTHY, FAILING, SILENT = "healthy", "failing", "silent"
SYNC_HEALTHS = (HEALTHY, FAILING, SILENT)


def report_key(source: str, generated_date: str) -> str:
    """Orders reports about one sync: Codat's answers over webhooks, then the newest."""
    return f"{1 if source in ANSWER_SOURCES else 0}#{generated_date}"


def sync_health(
    latest: SyncRecord | None, configured_since: str | None, now: str, silent_after: float
) -> str | None:
    """The verdict on a company's syncs: `failing` when the newest failed, `silent` when it is
    configured (`configured_since` set) and nothing synced within `silent_after` seconds of
    `now`, `healthy` otherwise; None for a company neither configured nor ever synced.

    Dates are our UTC form, so that seconds are told apart by text (see processor.clock).
    The one source of the verdict: the status document, the dashboard and the sweep's counts
    all call it."""
    if latest is None and configured_since is None:
        return None
    if latest is not None and latest.outcome == FAILED:
        return FAILING
    since = latest.at if latest is not None else configured_since
    silent = bool(since and _seconds_between(since, now) > silent_after)
    return SILENT if configured_since is not None and silent else HEALTHY


def _seconds_between(earlier: str, later: str) -> float:
    return (_utc(later) - _utc(earlier)).total_seconds()


def _utc(text: str) -> datetime:
    """Our UTC form (`2024-03-01T10:00:00.0000000Z`) as an aware datetime."""
    return datetime.fromisoformat(text[:26].removesuffix("Z") + "+00:00")


def merge_sync(record: SyncRecord | None, report: SyncReport, key: str) -> SyncRecord:
    """The record of a sync once `report` (ordered by `key`) is taken into account."""
    if record is None:
        record = SyncRecord(report.sync_id, report.at, None, "", None, "")
    merged = evolve(record, at=min(record.at, report.at))
    if report.outcome is not None and key > merged.outcome_key:
        merged = evolve(
            merged,
            outcome=report.outcome,
            outcome_key=key,
            failure_stage=report.failure_stage,
            error=report.error,
        )
    if report.transactions is not None and key > merged.transactions_key:
        merged = evolve(merged, transactions=report.transactions, transactions_key=key)
    return merged


def newest_first(records: list[SyncRecord]) -> list[SyncRecord]:
    return sorted(records, key=lambda r: (r.at, r.sync_id), reverse=True)

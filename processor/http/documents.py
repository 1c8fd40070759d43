"""The company status document: what the query API and `status --json` answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from handlers.state import CompanyState, ExpensesConfiguration, OnboardingState
from handlers.syncs import FAILED, SyncRecord, sync_health
from handlers.transitions import initial_state
from processor import clock
from store import (
    CALLS_KEPT,
    EFFECT_FAILED,
    EFFECT_PENDING,
    CodatCall,
    CompanyRow,
    Effect,
    OptionsSnapshot,
    Queries,
    StoredEvent,
)

CONFIGURATION_KEYS = ("bankAccount", "supplier", "customer", "checkedAt")
# The default of SYNC_SILENT_AFTER_SECONDS (processor/config.py).
SILENT_AFTER = 7 * 86400.0
# Failing transactions shown in the status document (`syncs` lists every one).
SHOWN_FAILING = 20


class Health:
    """What the sync health verdict is judged against: the time now, the silence allowed."""

    def __init__(self, now: datetime | None = None, silent_after: float = SILENT_AFTER) -> None:
        self.now = now
        self.silent_after = silent_after


def company_document(
    store: Queries, company_id: str, *, event_limit: int = 500, health: Health | None = None
) -> dict[str, Any] | None:
    """The status document of one company, or None if the store has never heard of it.

    Read in one snapshot: a command's result event and its closing are committed together, and
    the document never shows one without the other."""
    with store.read_snapshot():
        row = store.company(company_id)
        events = store.company_events(company_id, event_limit)
        effects = store.company_effects(company_id)
        calls = store.codat_calls(company_id, min(event_limit, CALLS_KEPT))
    if row is None and not events:
        return None
    document = summary(row, company_id, health)
    document["lastError"] = _last_error(document["lastError"], effects)
    document["pending"] = [_effect(e) for e in effects if e.status == EFFECT_PENDING]
    document["failed"] = [_effect(e) for e in effects if e.status == EFFECT_FAILED]
    document["pendingEvents"] = sum(1 for e in events if e.processed_at is None)
    # An event whose command failed says so (PRODUCT: an event's outcome is applied, stale,
    # duplicate, ignored or failed); requeued, it is applied again.
    failed = {e.caused_by for e in effects if e.status == EFFECT_FAILED}
    document["events"] = [_event(e, e.seq in failed) for e in events]
    document["codatCalls"] = [_call(c) for c in calls]
    return document


def summary(
    row: CompanyRow | None, company_id: str, health: Health | None = None
) -> dict[str, Any]:
    """The part of the document that comes from the company's state alone."""
    state = CompanyState.from_dict(row.data) if row is not None else initial_state(company_id)
    accounting, expense = state.accounting_connection, state.expense_connection
    error = None
    if state.last_error:
        error = {"message": state.last_error, "at": state.last_error_at}
    return {
        "id": company_id,
        "name": state.name,
        "state": row.state if row is not None else None,
        "accountingConnection": None
        if accounting is None
        else {
            "id": accounting.id,
            "platformKey": accounting.platform_key,
            "platformName": accounting.platform_name,
            "status": accounting.status,
        },
        "expenseConnection": None
        if expense is None
        else {"id": expense.id, "status": expense.status},
        "updatedAt": row.updated_at if row is not None else None,
        "lastError": error,
        "dataReadAt": state.data_read_at,
        "configuration": configuration(state.configuration),
        "sync": sync_summary(state, health or Health()),
    }


def sync_summary(state: CompanyState, health: Health) -> dict[str, Any]:
    """The company's expense syncs as its state keeps them, and the verdict on them.

    `health` is `failing` when the newest sync failed, `silent` when the company is configured
    and nothing synced (nor was configured) within the allowed silence, `healthy` otherwise;
    null for a company that is neither configured nor has reported a sync.
    """
    latest = state.latest_sync
    failing = latest.failing if latest is not None and latest.outcome == FAILED else ()
    previous = state.syncs[1] if len(state.syncs) > 1 else None
    return {
        "health": _health(state, health),
        "lastSuccessfulAt": state.last_successful_at,
        "lastFailedAt": state.last_failed_at,
        "latest": None if latest is None else sync_record(latest),
        "previousOutcome": previous.outcome if previous is not None else None,
        "failingTransactions": [
            {"id": t.id, "status": t.status, "errorMessage": t.error}
            for t in failing[:SHOWN_FAILING]
        ],
    }


def sync_record(record: SyncRecord) -> dict[str, Any]:
    """One sync as the documents show it (`failingCount` and `transactionCount` null when
    Codat has not listed its transactions)."""
    listed = record.transactions
    return {
        "syncId": record.sync_id,
        "at": record.at,
        "outcome": record.outcome,
        "failureStage": record.failure_stage,
        "error": record.error,
        "transactionCount": None if listed is None else len(listed),
        "failingCount": None if listed is None else len(record.failing),
    }


def _health(state: CompanyState, health: Health) -> str | None:
    """The verdict of `handlers.syncs.sync_health` (the one source), judged as of `health.now`:
    a configured company's silence counts from its newest sync, or from when its configuration
    was read back if it never synced."""
    configured = state.state == OnboardingState.CONFIGURED and state.configuration is not None
    since = state.configuration.checked_at if configured and state.configuration else None
    now = clock.format_datetime(health.now) if health.now is not None else clock.now()
    return sync_health(state.latest_sync, since, now, health.silent_after)


def configuration(observed: ExpensesConfiguration | None) -> dict[str, Any]:
    """The expense configuration as last read back from Codat: `unchecked` until it is read,
    then `set` (all three ids) or `not_set`."""
    if observed is None:
        return {"status": "unchecked", **dict.fromkeys(CONFIGURATION_KEYS)}
    return {
        "status": "set" if observed.is_set else "not_set",
        "bankAccount": observed.bank_account,
        "supplier": observed.supplier,
        "customer": observed.customer,
        "checkedAt": observed.checked_at,
    }


def options_document(snapshot: OptionsSnapshot) -> dict[str, Any]:
    """The stored choices of a company's configuration, for the expense app and `options`."""
    data = snapshot.data
    accounts = list(data.get("accounts") or [])
    return {
        "companyId": snapshot.company_id,
        "fetchedAt": snapshot.fetched_at,
        "expenseProvider": data.get("expenseProvider"),
        "bankAccounts": [a for a in accounts if a.get("isBankAccount") is True],
        "accounts": accounts,
        "trackingCategories": list(data.get("trackingCategories") or []),
        "taxRates": list(data.get("taxRates") or []),
        "suppliers": list(data.get("suppliers") or []),
        "customers": list(data.get("customers") or []),
    }


def _last_error(current: dict[str, Any] | None, effects: list[Effect]) -> dict[str, Any] | None:
    latest = current
    for effect in effects:
        if effect.status in (EFFECT_PENDING, EFFECT_FAILED) and effect.last_error:
            candidate = {"message": effect.last_error, "at": effect.updated_at}
            if latest is None or (latest.get("at") or "") <= effect.updated_at:
                latest = candidate
    return latest


def _effect(effect: Effect) -> dict[str, Any]:
    return {
        "command": effect.kind,
        "status": effect.status,
        "causedBy": effect.caused_by,
        "attempts": effect.attempts,
        "nextAttemptAt": effect.next_attempt_at if effect.status == EFFECT_PENDING else None,
        "lastError": effect.last_error,
        "createdAt": effect.created_at,
        "updatedAt": effect.updated_at,
    }


def _call(call: CodatCall) -> dict[str, Any]:
    return {
        "at": call.at,
        "operation": call.operation,
        "status": call.status,
        "durationMs": call.duration_ms,
        "correlationId": call.correlation_id,
        "error": call.error,
    }


def _event(event: StoredEvent, failed: bool = False) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "id": event.event_id,
        "messageId": event.message_id,
        "eventType": event.event_type,
        "source": event.source,
        "format": event.body_format,
        "connectionId": event.connection_id,
        "generatedDate": event.generated_date,
        "receivedAt": event.received_at,
        "deliveries": event.deliveries,
        "outcome": "failed" if failed else event.outcome or "pending",
    }

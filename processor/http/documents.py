"""The company status document: what the query API and `status --json` answer."""

from __future__ import annotations

from typing import Any

from handlers.state import CompanyState, ExpensesConfiguration
from handlers.transitions import initial_state
from store import (
    EFFECT_FAILED,
    EFFECT_PENDING,
    CompanyRow,
    Effect,
    OptionsSnapshot,
    Queries,
    StoredEvent,
)

CONFIGURATION_KEYS = ("bankAccount", "supplier", "customer", "checkedAt")


def company_document(
    store: Queries, company_id: str, *, event_limit: int = 500
) -> dict[str, Any] | None:
    """The status document of one company, or None if the store has never heard of it.

    Read in one snapshot: a command's result event and its closing are committed together, and
    the document never shows one without the other."""
    with store.read_snapshot():
        row = store.company(company_id)
        events = store.company_events(company_id, event_limit)
        effects = store.company_effects(company_id)
    if row is None and not events:
        return None
    document = summary(row, company_id)
    document["lastError"] = _last_error(document["lastError"], effects)
    document["pending"] = [_effect(e) for e in effects if e.status == EFFECT_PENDING]
    document["failed"] = [_effect(e) for e in effects if e.status == EFFECT_FAILED]
    document["pendingEvents"] = sum(1 for e in events if e.processed_at is None)
    document["events"] = [_event(e) for e in events]
    return document


def summary(row: CompanyRow | None, company_id: str) -> dict[str, Any]:
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
    }


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


def _event(event: StoredEvent) -> dict[str, Any]:
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
        "outcome": event.outcome or "pending",
    }

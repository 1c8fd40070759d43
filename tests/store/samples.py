"""Sample rows for the store tests: one company's events and intents, at fixed times."""

from __future__ import annotations

from typing import Any

from store import NewEvent, Store

COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"
KIND = "create_partner_expense_connection"
T0 = "2024-03-01T10:00:00.0000000Z"
T1 = "2024-03-01T10:00:10.0000000Z"
T2 = "2024-03-01T10:00:20.0000000Z"
T3 = "2024-03-01T10:00:30.0000000Z"
T4 = "2024-03-01T10:00:40.0000000Z"


def new_event(
    message_id: str,
    *,
    event_id: str | None = "evt-1",
    company_id: str | None = COMPANY,
    event_type: str = "connection.connected",
    generated_date: str = T0,
    received_at: str = T0,
    outcome: str | None = None,
) -> NewEvent:
    connection = {
        "id": "conn-1",
        "status": "Linked",
        "platform_key": "gbol",
        "platform_name": "Xero",
        "source_type": "Accounting",
    }
    fields: dict[str, Any] = {"company_id": company_id, "connection": connection}
    return NewEvent(
        message_id=message_id,
        event_type=event_type,
        body_format="current",
        source="webhook",
        generated_date=generated_date,
        received_at=received_at,
        body=b'{"eventType":"connection.connected"}',
        headers={"webhook-id": message_id},
        fields=fields,
        event_id=event_id,
        company_id=company_id,
        connection_id="conn-1",
        outcome=outcome,
    )


def open_intent(
    store: Store, key: str, *, company_id: str = COMPANY, kind: str = KIND, now: str = T0
) -> int | None:
    """Open an intent of `kind`; None if one is already open for the company and kind."""
    return store.open_effect(
        company_id=company_id,
        kind=kind,
        connection_id="conn-1",
        idempotency_key=key,
        caused_by=None,
        now=now,
    )


def opened_intent(
    store: Store, key: str, *, company_id: str = COMPANY, kind: str = KIND, now: str = T0
) -> int:
    """Open an intent that must open: its id."""
    effect_id = open_intent(store, key, company_id=company_id, kind=kind, now=now)
    assert effect_id is not None, f"no intent opened for {key}"
    return effect_id

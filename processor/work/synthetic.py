"""Events the processor records itself: Codat's answers to its own calls, and what
reconciliation found. They go through the same log and the same fold as webhooks."""

from __future__ import annotations

import json
from typing import Any

from processor import clock
from processor.codat.connections import connection_fields
from store import NewEvent

INTERNAL = "internal"  # the body format of every synthetic event


def synthetic_event(
    *,
    message_id: str,
    event_type: str,
    source: str,
    company_id: str,
    fields: dict[str, Any],
    body: Any,
    generated_date: str | None = None,
    now: str | None = None,
) -> NewEvent:
    """An event about `company_id`, received `now` and generated then (or at
    `generated_date`)."""
    now = now or clock.now()
    return NewEvent(
        message_id=message_id,
        event_type=event_type,
        body_format=INTERNAL,
        source=source,
        generated_date=generated_date or now,
        received_at=now,
        body=json.dumps(body).encode(),
        headers={},
        fields={"company_id": company_id, **fields},
        company_id=company_id,
        connection_id=(fields.get("connection") or {}).get("id"),
    )


def about_connection(connection: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of an event about a connection Codat answered with (none: no connection)."""
    return {} if connection is None else {"connection": connection_fields(connection)}

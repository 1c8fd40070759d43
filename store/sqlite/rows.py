"""SQLite rows to the store's records, and the columns they are read from."""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Sequence
from typing import Any

from store.records import CompanyRow, Effect, StoredEvent

EVENT_COLUMNS = (
    "seq, message_id, event_id, event_type, body_format, source, company_id, connection_id, "
    "generated_date, received_at, fields, deliveries, processed_at, outcome, duplicate_of"
)
EFFECT_COLUMNS = (
    "id, company_id, kind, connection_id, idempotency_key, caused_by, status, attempts, "
    "next_attempt_at, last_error, result, created_at, updated_at, requeued_at, "
    # (read FROM effects: the company's first intent of the kind since the last one done)
    "(SELECT MIN(earliest.created_at) FROM effects AS earliest "
    "WHERE earliest.company_id = effects.company_id AND earliest.kind = effects.kind "
    "AND earliest.id > COALESCE((SELECT MAX(succeeded.id) FROM effects AS succeeded "
    "WHERE succeeded.company_id = effects.company_id AND succeeded.kind = effects.kind "
    "AND succeeded.status = 'done'), 0))"
)
# Ids bound in one `IN (...)` at most (SQLite's limit is 32,766 since 3.32; kept well below).
MAX_PARAMETERS = 500
COMPANY_COLUMNS = "company_id, state, data, updated_at, checked_at"


# json.loads's own scanner, called without json.loads's two layers of Python around it (they
# cost as much as scanning the small documents stored here).
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # (typeshed)


def loads(text: str) -> Any:
    """`json.loads(text)`, faster: the same value, or the same error."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, TypeError):
        # Not a JSON value where it starts, or not text: json.loads decodes it or says why.
        return json.loads(text)
    if end != len(text):
        return json.loads(text)  # something after it: whitespace, or an error to raise
    return value


# json.dumps(value, separators=(",", ":")), without building an encoder at every call.
dumps = json.JSONEncoder(separators=(",", ":")).encode


def json_or_none(value: dict[str, Any] | None) -> str | None:
    return None if value is None else dumps(value)


def stored_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        seq=row[0],
        message_id=row[1],
        event_id=row[2],
        event_type=row[3],
        body_format=row[4],
        source=row[5],
        company_id=row[6],
        connection_id=row[7],
        generated_date=row[8],
        received_at=row[9],
        fields=loads(row[10]),
        deliveries=row[11],
        processed_at=row[12],
        outcome=row[13],
        duplicate_of=row[14],
    )


def effect(row: Sequence[Any]) -> Effect:
    return Effect(
        id=row[0],
        company_id=row[1],
        kind=row[2],
        connection_id=row[3],
        idempotency_key=row[4],
        caused_by=row[5],
        status=row[6],
        attempts=row[7],
        next_attempt_at=row[8],
        last_error=row[9],
        result=loads(row[10]) if row[10] else None,
        created_at=row[11],
        updated_at=row[12],
        requeued_at=row[13],
        first_of_kind_at=row[14],
    )


def company_row(row: Sequence[Any]) -> CompanyRow:
    return CompanyRow(
        company_id=row[0],
        state=row[1],
        data=loads(row[2]),
        updated_at=row[3],
        checked_at=row[4],
    )

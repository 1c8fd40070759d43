"""From a verified webhook body to an event for the log: current envelope or legacy body.

Anything signed and shaped as a JSON object is stored: an unknown type or an unexpected shape is
recorded as ignored rather than refused, so Codat never retries (and never disables us) for it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from handlers.events import ConnectionStatus, SourceType
from handlers.syncs import FAILED, SUCCESSFUL
from handlers.transitions import (
    CONNECTION_CONNECTED,
    CONNECTION_CREATED,
    CONNECTION_DISCONNECTED,
    CONNECTION_RECONNECTED,
    IGNORED,
    READ_EVENTS,
    SYNC_SUCCESSFUL,
    SYNC_UNSUCCESSFUL,
)
from processor import clock
from processor.codat.connections import clean, connection_fields, text
from store import NewEvent

log = logging.getLogger(__name__)
CURRENT = "current"
LEGACY = "legacy"
UNKNOWN = "unknown"
MAX_JSON_DEPTH = 64
# A read names a few connections and a few dozen data types; more is kept out of the log.
MAX_READ_CONNECTIONS = 10
MAX_READ_DATA_TYPES = 100
# A sync lists its transactions; more than this many are left out of the log (the count stays).
MAX_SYNC_TRANSACTIONS = 500
# The legacy rules that report an expense sync, and the outcome each stands for, by name (the
# bodies' examples) and by id (Codat's Expenses guide still names them so).
LEGACY_SYNC_RULES = {
    "Sync Completed": SYNC_SUCCESSFUL,
    "Sync Failed": SYNC_UNSUCCESSFUL,
    "SyncCompleted": SYNC_SUCCESSFUL,
    "SyncFailed": SYNC_UNSUCCESSFUL,
}
SYNC_OUTCOME_OF = {SYNC_SUCCESSFUL: SUCCESSFUL, SYNC_UNSUCCESSFUL: FAILED}
# Codat's notices about the client's rate limit (no company: stored as ignored, read by the
# worker, processor/work/ratelimits.py).
RATE_LIMIT_EVENTS = frozenset({"client.rateLimit.reached", "client.rateLimit.reset"})


class BodyError(ValueError):
    """A verified body that is not a JSON object."""


def parse_body(body: bytes) -> dict[str, Any]:
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise BodyError(f"expected a JSON object nested at most {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise BodyError(f"expected a JSON object, found invalid JSON: {error}") from None
    if not isinstance(data, dict):
        raise BodyError(f"expected a JSON object, found a JSON {_json_kind(data)}")
    return data


def webhook_event(
    data: dict[str, Any],
    *,
    body: bytes,
    message_id: str,
    timestamp: int,
    headers: dict[str, str],
    received_at: str,
) -> NewEvent:
    """The log entry for one verified webhook.

    A body this mapping cannot read (a shape no test foresaw) is still stored, as an ignored
    event of type "unknown" with its raw body, and the error logged: a 5xx would have Codat
    retry it for 28 hours, then drop it."""
    try:
        body_format, event_type, event_id, generated, fields = _read(data, timestamp)
    except Exception:
        log.exception("webhook %s: its body could not be read; stored as ignored", message_id)
        body_format = event_type = UNKNOWN
        event_id, generated, fields = None, clock.from_timestamp(timestamp), {}
    company_id = fields.get("company_id")
    connection = fields.get("connection") or {}
    return NewEvent(
        message_id=message_id,
        event_id=event_id,
        event_type=event_type[:200],
        body_format=body_format,
        source="webhook",
        company_id=company_id,
        connection_id=connection.get("id"),
        generated_date=generated,
        received_at=received_at,
        body=body,
        headers=headers,
        fields=fields,
        outcome=None if company_id else IGNORED,
    )


def _read(data: dict[str, Any], timestamp: int) -> tuple[str, str, str | None, str, dict[str, Any]]:
    """What a body says: its format, event type, event id, generated date and fields."""
    fields: dict[str, Any]
    if isinstance(data.get("eventType"), str):
        body_format = CURRENT
        event_type = clean(data["eventType"])
        event_id = text(data.get("id"))
        generated = _date(data.get("generatedDate")) or clock.from_timestamp(timestamp)
        fields = _current_fields(event_type, data.get("payload"))
    elif data.get("RuleType") == "DataConnectionStatusChanged":
        body_format = LEGACY
        event_id = text(data.get("AlertId"))
        # Legacy bodies carry no generatedDate: the first delivery's timestamp stands in.
        generated = clock.from_timestamp(timestamp)
        event_type, fields = _legacy_fields(data)
    elif _legacy_sync_rule(data.get("RuleType")) and _is_expense_sync(data):
        body_format = LEGACY
        event_id = text(data.get("AlertId"))
        generated = clock.from_timestamp(timestamp)
        event_type, fields = _legacy_sync_fields(data)
    else:
        body_format = LEGACY if "RuleType" in data else UNKNOWN
        event_id = text(data.get("AlertId") or data.get("id"))
        generated = clock.from_timestamp(timestamp)
        event_type = clean(f"legacy.{data['RuleType']}") if "RuleType" in data else "unknown"
        fields = {"company_id": text(data.get("CompanyId") or data.get("companyId"))}
    return body_format, event_type, event_id, generated, fields


def _legacy_sync_rule(rule: Any) -> bool:
    """A legacy rule that reports an expense sync (a RuleType that is no text is none)."""
    return isinstance(rule, str) and rule in LEGACY_SYNC_RULES


def _current_fields(event_type: str, payload: Any) -> dict[str, Any]:
    payload = payload if isinstance(payload, dict) else {}
    fields: dict[str, Any] = {}
    if event_type.startswith("company."):
        fields["company_id"] = text(payload.get("id"))
        fields["company_name"] = text(payload.get("name"))
        return fields
    company = payload.get("referenceCompany")
    company = company if isinstance(company, dict) else {}
    fields["company_id"] = text(company.get("id") or payload.get("companyId"))
    fields["company_name"] = text(company.get("name"))
    connection = payload.get("connection")
    if event_type.startswith("connection.") and isinstance(connection, dict):
        fields["connection"] = connection_fields(connection)
        fields["error"] = _connection_error(connection)
    if event_type in READ_EVENTS:
        fields.update(_read_fields(payload.get("dataTypes")))
    if event_type in SYNC_OUTCOME_OF:
        fields["sync"] = _sync_fields(event_type, payload)
    if event_type in RATE_LIMIT_EVENTS:
        fields["rateLimit"] = _rate_limit_fields(payload)
    return fields


def _rate_limit_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """What a rate-limit notice says: the daily quota, what is left, when it resets."""

    def count(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return {
        "dailyQuota": count(payload.get("dailyQuota")),
        "quotaRemaining": count(payload.get("quotaRemaining")),
        "expiryDate": _date(payload.get("expiryDate")),
    }


def _sync_fields(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A sync webhook's sync: its id, outcome, and transactions if the body lists them."""
    listed = payload.get("transactions")
    transactions = None
    if isinstance(listed, list):
        transactions = [
            {
                "id": text(item.get("id")) or "",
                "status": text(item.get("status")),
                "errorMessage": text(item.get("errorMessage")),
            }
            for item in listed[:MAX_SYNC_TRANSACTIONS]
            if isinstance(item, dict)
        ]
    return {
        "syncId": text(payload.get("syncId")),
        "outcome": SYNC_OUTCOME_OF[event_type],
        "transactions": transactions,
        "transactionCount": len(listed) if isinstance(listed, list) else None,
    }


def _is_expense_sync(data: dict[str, Any]) -> bool:
    details = data.get("Data")
    sync_type = details.get("syncType") if isinstance(details, dict) else None
    # Codat's examples say "Expense"; a body that does not say is taken as one.
    return sync_type in (None, "Expense", "Expenses")


def _legacy_sync_fields(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`Sync Completed`/`Sync Failed`: no transactions, a failure stage instead."""
    details = data.get("Data") if isinstance(data.get("Data"), dict) else {}
    assert isinstance(details, dict)
    event_type = LEGACY_SYNC_RULES[str(data.get("RuleType"))]
    sync = {
        "syncId": text(details.get("syncId")),
        "outcome": SYNC_OUTCOME_OF[event_type],
        "transactions": None,
        "failureStage": text(details.get("FailureStage")),
    }
    return event_type, {"company_id": text(data.get("CompanyId")), "sync": sync}


def _read_fields(summaries: Any) -> dict[str, Any]:
    """A data read names its connections only in its data type summaries.

    A connection counts as read when at least one of its data types is `Complete`: a read in
    which every data type failed (`AuthError`, `FetchError`...) gives no choices to show.
    """
    summaries = summaries if isinstance(summaries, list) else []
    data_types = []
    connection_ids: list[str] = []
    for summary in summaries[:MAX_READ_DATA_TYPES]:
        if not isinstance(summary, dict):
            continue
        connection_id = text(summary.get("connectionId"))
        data_types.append(
            {
                "connectionId": connection_id,
                "dataType": text(summary.get("dataType")),
                "status": text(summary.get("status")),
            }
        )
        complete = summary.get("status") == "Complete"
        if connection_id and complete and connection_id not in connection_ids:
            connection_ids.append(connection_id)
    connection_ids = connection_ids[:MAX_READ_CONNECTIONS]
    fields: dict[str, Any] = {"connection_ids": connection_ids, "data_types": data_types}
    if connection_ids:
        # The first connection also as `connection`: the log's connection id, and what the
        # handlers read when an event carries no `connection_ids`.
        fields["connection"] = {"id": connection_ids[0]}
    return fields


def _legacy_fields(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    details = data.get("Data") if isinstance(data.get("Data"), dict) else {}
    assert isinstance(details, dict)
    old, new = text(details.get("oldStatus")), text(details.get("newStatus"))
    connection = {
        "id": text(details.get("dataConnectionId") or data.get("DataConnectionId")),
        "status": new,
        "platform_key": text(details.get("platformKey")),
        "platform_name": None,
        "source_type": None,
    }
    if old in (None, "", "None") and new == ConnectionStatus.LINKED:
        # Accounting connections are born PendingAuth and linked by the customer; the only
        # connection that appears already Linked is the partner expense connection.
        connection["source_type"] = SourceType.EXPENSE
        return CONNECTION_CREATED, {
            "company_id": text(data.get("CompanyId")),
            "connection": connection,
        }
    fields = {"company_id": text(data.get("CompanyId")), "connection": connection}
    return _legacy_type(old, new), fields


def _legacy_type(old: str | None, new: str | None) -> str:
    if new == ConnectionStatus.PENDING_AUTH and old in (None, "", "None"):
        return CONNECTION_CREATED
    if new == ConnectionStatus.LINKED and old == ConnectionStatus.PENDING_AUTH:
        return CONNECTION_CONNECTED
    if new in (ConnectionStatus.UNLINKED, ConnectionStatus.DEAUTHORIZED):
        return CONNECTION_DISCONNECTED
    if new == ConnectionStatus.LINKED and old in (
        ConnectionStatus.UNLINKED,
        ConnectionStatus.DEAUTHORIZED,
    ):
        return CONNECTION_RECONNECTED
    return f"legacy.DataConnectionStatusChanged.{old}->{new}"


def _connection_error(connection: dict[str, Any]) -> str | None:
    errors = connection.get("dataConnectionErrors")
    if not isinstance(errors, list) or not errors:
        return None
    last = errors[-1] if isinstance(errors[-1], dict) else {}
    parts = [text(last.get(key)) for key in ("statusCode", "statusText", "errorMessage")]
    return " ".join(part for part in parts if part) or None


def _date(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return clock.normalize(value)
    except clock.InvalidDate:
        return None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _depth_exceeds(body: bytes, limit: int) -> bool:
    """A cheap bracket count before parsing, so deeply nested JSON cannot exhaust the stack."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False

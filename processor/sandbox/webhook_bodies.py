"""Builders of Codat's companies, connections and webhook bodies, shaped as Codat sends them."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from processor.codat.platforms import resolve_platform

COMPANY_EVENTS = ("company.created", "company.deleted")
CONNECTION_EVENTS = (
    "connection.created",
    "connection.connected",
    "connection.failed",
    "connection.disconnected",
    "connection.reconnected",
    "connection.deleted",
)
READ_EVENTS = ("read.completed.initial", "read.completed")
SYNC_EVENTS = ("expenses.sync.successful", "expenses.sync.unsuccessful")
# The statuses of a transaction in a sync webhook (ExpensesSyncWebhook's transaction).
SYNC_TRANSACTION_STATUSES = ("Unknown", "PushError", "Completed", "Failed", "Pending")
RATE_LIMIT_EVENTS = ("client.rateLimit.reached", "client.rateLimit.reset")
LEGACY_SYNC_RULE_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://api.codat.io/rules/sync"))
# The accounting data Sync for Expenses reads (CODAT.md): what its mapping options, suppliers and
# customers come from. Whether Codat's read.completed.initial names exactly these is unknown.
EXPENSES_DATA_TYPES = (
    "bankAccounts",
    "chartOfAccounts",
    "customers",
    "suppliers",
    "taxRates",
    "trackingCategories",
)
CONNECTION_STATUSES = ("PendingAuth", "Linked", "Unlinked", "Deauthorized")
SOURCE_TYPES = ("Accounting", "Banking", "BankFeed", "Commerce", "Expense", "Other", "Unknown")

# Codat's Connection schema forbids other properties, so bodies carry exactly these.
CONNECTION_FIELDS = (
    "id",
    "integrationId",
    "integrationKey",
    "sourceId",
    "sourceType",
    "platformName",
    "linkUrl",
    "status",
    "created",
    "lastSync",
    "dataConnectionErrors",
    "connectionInfo",
)
COMPANY_PAYLOAD_FIELDS = ("id", "name", "description", "redirect", "created", "tags")

# Stable identifiers of the (fictional) Codat client that sends legacy rule notifications.
SANDBOX_CLIENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://api.codat.io/sandbox-client"))
SANDBOX_CLIENT_NAME = "Codat sandbox client"
LEGACY_RULE_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://api.codat.io/rules/status-changed"))

Body = dict[str, Any]


def utc_now() -> str:
    """The current time as Codat writes it: ISO 8601, UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_company(
    name: str,
    *,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    company_id: str | None = None,
    created: str | None = None,
) -> Body:
    """A Company as `POST /companies` returns it, with no connections yet."""
    company_id = company_id or str(uuid.uuid4())
    return {
        "id": company_id,
        "name": name,
        "description": description,
        "redirect": f"https://link.codat.io/company/{company_id}",
        "lastSync": None,
        "created": created or utc_now(),
        "products": [],
        "tags": dict(tags or {}),
        "dataConnections": [],
    }


def new_connection(
    company_id: str,
    platform_key: str,
    *,
    platform_name: str | None = None,
    source_type: str = "Accounting",
    status: str = "PendingAuth",
    connection_id: str | None = None,
    created: str | None = None,
) -> Body:
    """A Connection as `POST /companies/{companyId}/connections` returns it.

    `platform_name` defaults to the name of a known accounting platform key; give it for any other
    key (the partner expense connection's key and name are not published by Codat).
    """
    if platform_name is None:
        platform_key, platform_name = resolve_platform(platform_key)
    _expect("status", status, CONNECTION_STATUSES)
    _expect("source_type", source_type, SOURCE_TYPES)
    connection_id = connection_id or str(uuid.uuid4())
    created = created or utc_now()
    return {
        "id": connection_id,
        # One integration per platform, as in Codat: the same key always gives the same id.
        "integrationId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"codat-integration:{platform_key}")),
        "integrationKey": platform_key,
        "sourceId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"codat-source:{platform_key}")),
        "sourceType": source_type,
        "platformName": platform_name,
        "linkUrl": (
            f"https://link-api.codat.io/companies/{company_id}/connections/{connection_id}/start"
        ),
        "status": status,
        "created": created,
        "lastSync": created if status == "Linked" else None,
        "dataConnectionErrors": [],
        "connectionInfo": None,
    }


def connection_error(
    message: str, *, status_code: str = "400", status_text: str = "Bad Request"
) -> Body:
    """An active entry of a Connection's `dataConnectionErrors`."""
    return {
        "statusCode": status_code,
        "statusText": status_text,
        "errorMessage": message,
        "erroredOnUtc": utc_now(),
        "status": "Active",
    }


def company_reference(company: Body) -> Body:
    """The `referenceCompany` of a connection event."""
    return {
        "id": company["id"],
        "name": company["name"],
        "description": company.get("description"),
        "links": {"portal": f"https://app.codat.io/companies/{company['id']}/summary"},
        "tags": dict(company.get("tags") or {}),
    }


def company_event(
    event_type: str,
    company: Body,
    *,
    generated_date: str | None = None,
    event_id: str | None = None,
) -> Body:
    """A `company.created` or `company.deleted` body: the payload is the company itself."""
    _expect("event_type", event_type, COMPANY_EVENTS)
    payload = {field: company.get(field) for field in COMPANY_PAYLOAD_FIELDS}
    payload["tags"] = dict(payload["tags"] or {})
    return _envelope(event_type, payload, generated_date, event_id)


def connection_event(
    event_type: str,
    company: Body,
    connection: Body,
    *,
    generated_date: str | None = None,
    event_id: str | None = None,
) -> Body:
    """A `connection.*` body: the company reference and a snapshot of the connection."""
    _expect("event_type", event_type, CONNECTION_EVENTS)
    payload = {
        "referenceCompany": company_reference(company),
        "connection": {
            field: connection[field] for field in CONNECTION_FIELDS if field in connection
        },
    }
    return _envelope(event_type, payload, generated_date, event_id)


def read_completed_event(
    event_type: str,
    company: Body,
    connection_id: str,
    *,
    data_types: tuple[str, ...] = EXPENSES_DATA_TYPES,
    modified_from: str | None = None,
    generated_date: str | None = None,
    event_id: str | None = None,
) -> Body:
    """A `read.completed.initial` or `read.completed` body: one summary per data type read."""
    _expect("event_type", event_type, READ_EVENTS)
    summaries = [
        {
            "connectionId": connection_id,
            "dataType": data_type,
            "recordsModified": True,
            "status": "Complete",
            "issues": [],
        }
        for data_type in data_types
    ]
    payload = {
        "referenceCompany": company_reference(company),
        "modifiedFromDate": modified_from,
        "dataTypes": summaries,
    }
    return _envelope(event_type, payload, generated_date, event_id)


def sync_event(
    event_type: str,
    company: Body,
    sync_id: str,
    transactions: list[Body] | None,
    *,
    generated_date: str | None = None,
    event_id: str | None = None,
) -> Body:
    """An `expenses.sync.successful`/`unsuccessful` body; `transactions` None leaves them out.

    Each transaction is `{"id", "status", "errorMessage"}` (ExpensesSyncWebhook).
    """
    _expect("event_type", event_type, SYNC_EVENTS)
    for transaction in transactions or []:
        _expect("transaction status", transaction["status"], SYNC_TRANSACTION_STATUSES)
    payload: Body = {"referenceCompany": company_reference(company), "syncId": sync_id}
    if transactions is not None:
        payload["transactions"] = transactions
    return _envelope(event_type, payload, generated_date, event_id)


def legacy_sync_event(
    company: Body,
    sync_id: str,
    *,
    failure_stage: str | None = None,
    alert_id: str | None = None,
) -> Body:
    """The legacy `Sync Completed` body, or `Sync Failed` when a failure stage is given."""
    failed = failure_stage is not None
    data: Body = {"syncId": sync_id, "syncType": "Expense"}
    if failed:
        data["FailureStage"] = failure_stage
    outcome = "failed" if failed else "completed successfully"
    return {
        "ClientId": SANDBOX_CLIENT_ID,
        "ClientName": SANDBOX_CLIENT_NAME,
        "CompanyId": company["id"],
        "RuleId": LEGACY_SYNC_RULE_ID,
        "RuleType": "Sync Failed" if failed else "Sync Completed",
        "AlertId": alert_id or str(uuid.uuid4()),
        "Message": f"Sync {sync_id} for company {company['id']} of type Expense {outcome}.",
        "Data": data,
    }


def rate_limit_event(
    event_type: str,
    *,
    daily_quota: int,
    quota_remaining: int,
    expiry_date: str,
    generated_date: str | None = None,
) -> Body:
    """A `client.rateLimit.reached`/`reset` body (ClientRateLimitWebhook)."""
    _expect("event_type", event_type, RATE_LIMIT_EVENTS)
    payload = {
        "dailyQuota": daily_quota,
        "quotaRemaining": quota_remaining,
        "expiryDate": expiry_date,
    }
    return _envelope(event_type, payload, generated_date, None)


def legacy_status_changed(
    company: Body,
    connection: Body,
    old_status: str | None,
    new_status: str,
    *,
    alert_id: str | None = None,
    client_id: str = SANDBOX_CLIENT_ID,
    client_name: str = SANDBOX_CLIENT_NAME,
    rule_id: str = LEGACY_RULE_ID,
) -> Body:
    """The legacy rules-service `DataConnectionStatusChanged` body (no date, no source type)."""
    if old_status is not None:
        _expect("old_status", old_status, CONNECTION_STATUSES)
    _expect("new_status", new_status, CONNECTION_STATUSES)
    return {
        "ClientId": client_id,
        "ClientName": client_name,
        "CompanyId": company["id"],
        "DataConnectionId": connection["id"],
        "RuleId": rule_id,
        "RuleType": "DataConnectionStatusChanged",
        "AlertId": alert_id or str(uuid.uuid4()),
        "Message": (
            f"Data connection {connection['platformName']} for {company['name']} changed status"
            f" from {old_status or 'none'} to {new_status}."
        ),
        "Data": {
            "dataConnectionId": connection["id"],
            "newStatus": new_status,
            "oldStatus": old_status,
            "platformKey": connection["integrationKey"],
        },
    }


def encode(body: Body) -> bytes:
    """Compact UTF-8 JSON, as a webhook sender puts it on the wire."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _envelope(
    event_type: str, payload: Body, generated_date: str | None, event_id: str | None
) -> Body:
    return {
        "id": event_id or str(uuid.uuid4()),
        "eventType": event_type,
        "generatedDate": generated_date or utc_now(),
        "payload": payload,
    }


def _expect(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}.")

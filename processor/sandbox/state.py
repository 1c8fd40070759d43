"""The stand-in's state: companies, connections, and the webhooks their changes send."""

import asyncio
import base64
import copy
import hmac
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from processor.sandbox.accounting_data import AccountingData, accounting_data
from processor.sandbox.errors import (
    DAILY_QUOTA,
    PARTNER_EXPENSE_KEY,
    PARTNER_EXPENSE_NAME,
    ErrorAnswer,
    Json,
    invalid,
)
from processor.sandbox.faults import Faults
from processor.sandbox.idempotency import IdempotencyKeys
from processor.sandbox.sender import (
    DEFAULT_RETRY_DELAYS,
    Attempt,
    WebhookSender,
    check_secrets,
    new_message_id,
)
from processor.sandbox.webhook_bodies import (
    company_event,
    connection_error,
    connection_event,
    encode,
    legacy_status_changed,
    new_company,
    new_connection,
    read_completed_event,
    utc_now,
)

log = logging.getLogger("processor.sandbox")
# Webhook attempts in flight at once (as the HTTP client's connections): a burst of messages
# waits its turn in order, where a longer queue in httpx's pool costs time per request.
WEBHOOKS_IN_FLIGHT = 8


@dataclass
class CompanyRecord:
    """A company, all its connections (deleted ones kept) and sandbox switches."""

    company: Json
    connections: dict[str, Json] = field(default_factory=dict)
    deleted_connections: set[str] = field(default_factory=set)
    deleted: bool = False
    legacy: bool = False
    # Codat's read of the accounting data: None until a first read completes.
    data: AccountingData | None = None
    read_connections: set[str] = field(default_factory=set)
    # POST /sync/expenses/config as last set: {"bankAccount": {"id"}, "supplier", "customer"}.
    expenses_config: Json | None = None
    # The expense syncs the admin API scripted (processor/sandbox/syncs.py), with transactions.
    syncs: list[Json] = field(default_factory=list)

    def live_connections(self) -> list[Json]:
        return [c for i, c in self.connections.items() if i not in self.deleted_connections]

    def as_codat(self) -> Json:
        return {**self.company, "dataConnections": self.live_connections()}

    def dump(self) -> Json:
        connections = [
            {**c, "deleted": i in self.deleted_connections} for i, c in self.connections.items()
        ]
        return {
            **self.company,
            "deleted": self.deleted,
            "legacy": self.legacy,
            "connections": connections,
            "readConnections": sorted(self.read_connections),
            "expensesConfig": self.expenses_config,
            "syncs": self.syncs,
        }


@dataclass
class WebhookConfig:
    """Where and how the sandbox delivers webhooks."""

    url: str | None = None
    secrets: list[str] = field(default_factory=list)
    auto: bool = True
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    header_prefix: str = "webhook"
    # Seconds from an accounting connection's first Linked to Codat's first read of its data
    # (read.completed.initial); None: never by itself, only through the admin API.
    data_read_delay: float | None = None

    def to_json(self) -> Json:
        return {
            "webhookUrl": self.url,
            "secrets": self.secrets,
            "autoWebhooks": self.auto,
            "retryDelays": list(self.retry_delays),
            "headerPrefix": self.header_prefix,
            "dataReadDelay": self.data_read_delay,
        }


@dataclass
class RequestContext:
    """What the fault layer tells the endpoint about one request, and what it learns back."""

    hold_after_create: float = 0.0
    replayed: bool = False


class Sandbox:
    """The in-memory Codat: companies, connections, idempotency keys, faults and webhooks."""

    def __init__(self, api_key: str, webhooks: WebhookConfig) -> None:
        self.authorization = "Basic " + base64.b64encode(api_key.encode()).decode()
        self.webhooks = webhooks
        self.companies: dict[str, CompanyRecord] = {}
        self.faults = Faults()
        self.idempotency = IdempotencyKeys()
        self.requests: list[Json] = []
        self.events: list[Json] = []
        self.deliveries: list[Json] = []
        self.http: httpx.AsyncClient | None = None
        # The event loop the stand-in's app runs on (set by its lifespan, as `http`).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Json]] = set()
        self._reads: set[asyncio.TimerHandle] = set()
        # The active companies (a Linked live connection), for the rate-limit headers every
        # answer carries: kept up to date at each change of a company's connections.
        self._active: set[str] = set()
        self._sending = asyncio.Semaphore(WEBHOOKS_IN_FLIGHT)
        # The sourceType of the partner expense connections it creates: CODAT.md says "most
        # likely Expense" and leaves it unknown; a test sets another to check both cases.
        self.partner_source_type = "Expense"

    def authorized(self, header: str | None) -> bool:
        return hmac.compare_digest((header or "").encode(), self.authorization.encode())

    def daily_limit(self) -> int:
        """Codat's daily quota: 1,000 x (1 + active connected companies)."""
        return DAILY_QUOTA * (1 + len(self._active))

    def _changed(self, record: CompanyRecord) -> None:
        """A company's connections (or the company) changed: its place in the active count."""
        if not record.deleted and _is_active(record):
            self._active.add(record.company["id"])
        else:
            self._active.discard(record.company["id"])

    def rate_limit_headers(self) -> dict[str, str]:
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        limit = self.daily_limit()
        return {
            "X-Rate-Limit-Limit": str(limit),
            "X-Rate-Limit-Remaining": str(max(0, limit - len(self.requests))),
            "X-Rate-Limit-Reset": f"{tomorrow.isoformat()}T00:00:00Z",
        }

    # Lookups

    def company(self, company_id: str) -> CompanyRecord:
        record = self.companies.get(company_id)
        if record is None or record.deleted:
            raise ErrorAnswer(404, f"No company was found with id {company_id}.")
        return record

    def connection(self, record: CompanyRecord, connection_id: str) -> Json:
        connection = record.connections.get(connection_id)
        if connection is None or connection_id in record.deleted_connections:
            raise ErrorAnswer(404, f"Data connection {connection_id} was not found.")
        return connection

    # Codat's operations

    def create_company(self, name: str, description: str | None, tags: dict[str, str]) -> Json:
        company = new_company(name, description=description, tags=tags)
        del company["dataConnections"]
        record = CompanyRecord(company)
        self.companies[company["id"]] = record
        self._emit(company_event("company.created", company))
        return record.as_codat()

    def create_connection(self, record: CompanyRecord, platform_key: str) -> Json:
        connection = new_connection(record.company["id"], platform_key)
        return self._add_connection(record, connection)

    def create_partner_expense(self, record: CompanyRecord) -> Json:
        connection = new_connection(
            record.company["id"],
            PARTNER_EXPENSE_KEY,
            platform_name=PARTNER_EXPENSE_NAME,
            source_type=self.partner_source_type,
            status="Linked",
        )
        return self._add_connection(record, connection)

    def _add_connection(self, record: CompanyRecord, connection: Json) -> Json:
        record.connections[connection["id"]] = connection
        self._changed(record)
        self._emit_connection("connection.created", record, connection, None)
        return connection

    def unlink(self, record: CompanyRecord, connection: Json) -> Json:
        if connection["status"] != "Linked":
            raise invalid(
                "status",
                f"Only a Linked connection can be unlinked; connection {connection['id']}"
                f" is {connection['status']}.",
                "ConnectionStatus",
            )
        return self._set_status(record, connection, "Unlinked", "connection.disconnected")

    # The customer's side, driven through the admin API

    def authorize(self, record: CompanyRecord, connection: Json) -> Json:
        previous = connection["status"]
        if previous == "Linked":
            raise ErrorAnswer(409, f"Connection {connection['id']} is already Linked.")
        connection["lastSync"] = utc_now()
        for error in connection["dataConnectionErrors"]:
            if error.get("status") == "Active":
                error.update(status="Resolved", resolvedOnUtc=utc_now())
        event = "connection.connected" if previous == "PendingAuth" else "connection.reconnected"
        linked = self._set_status(record, connection, "Linked", event)
        delay = self.webhooks.data_read_delay
        first = connection["id"] not in record.read_connections
        if delay is not None and first and connection["sourceType"] == "Accounting":
            self._schedule_read(record, connection, delay)
        return linked

    # Codat's read of the accounting data, and the expense sync configuration

    def complete_read(self, record: CompanyRecord, connection: Json) -> Json:
        """Codat finishes reading the connection's data: read.completed.initial the first time."""
        if connection["status"] != "Linked":
            raise ErrorAnswer(
                409,
                f"Only a Linked connection's data can be read; connection {connection['id']}"
                f" is {connection['status']}.",
            )
        if record.data is None:
            record.data = accounting_data(record.company["id"])
        first = connection["id"] not in record.read_connections
        record.read_connections.add(connection["id"])
        event_type = "read.completed.initial" if first else "read.completed"
        body = read_completed_event(event_type, record.company, connection["id"])
        self._emit(body)
        return body

    def _schedule_read(self, record: CompanyRecord, connection: Json, delay: float) -> None:
        def read() -> None:
            self._reads.discard(handle)
            live = connection["id"] not in record.deleted_connections and not record.deleted
            if live and connection["status"] == "Linked":
                self.complete_read(record, connection)

        handle = asyncio.get_running_loop().call_later(delay, read)
        self._reads.add(handle)

    def data_of(self, record: CompanyRecord) -> AccountingData:
        """The company's accounting data; empty until Codat's first read completes."""
        return record.data or AccountingData()

    def set_expenses_config(self, record: CompanyRecord, config: Json) -> Json:
        data = self.data_of(record)
        choices = {
            "bankAccount": data.bank_account_ids(),
            "supplier": [supplier["id"] for supplier in data.suppliers],
            "customer": [customer["id"] for customer in data.customers],
        }
        for name, valid in choices.items():
            chosen = config[name]["id"]
            if chosen not in valid:
                raise invalid(
                    f"{name}.id",
                    f"No {name} with id {chosen!r} in the company's accounting data; valid:"
                    f" {', '.join(valid) or 'none (the data is not read yet)'}.",
                )
        record.expenses_config = {name: {"id": config[name]["id"]} for name in choices}
        return record.expenses_config

    def fail(self, record: CompanyRecord, connection: Json, message: str) -> Json:
        connection["dataConnectionErrors"].append(connection_error(message))
        self._emit_connection("connection.failed", record, connection, connection["status"])
        return connection

    def deauthorize(self, record: CompanyRecord, connection: Json) -> Json:
        if connection["status"] != "Linked":
            raise ErrorAnswer(
                409,
                f"Only a Linked connection can lose its authorization; connection"
                f" {connection['id']} is {connection['status']}.",
            )
        return self._set_status(record, connection, "Deauthorized", "connection.disconnected")

    def delete_connection(self, record: CompanyRecord, connection: Json) -> None:
        record.deleted_connections.add(connection["id"])
        self._changed(record)
        self._emit_connection("connection.deleted", record, connection, connection["status"])

    def delete_company(self, record: CompanyRecord) -> None:
        record.deleted = True
        self._changed(record)
        self._emit(company_event("company.deleted", record.company))

    def _set_status(self, record: CompanyRecord, connection: Json, status: str, event: str) -> Json:
        previous = connection["status"]
        connection["status"] = status
        self._changed(record)
        self._emit_connection(event, record, connection, previous)
        return connection

    # Webhooks

    def _emit_connection(
        self, event: str, record: CompanyRecord, connection: Json, previous: str | None
    ) -> None:
        if not record.legacy:
            self._emit(connection_event(event, record.company, connection))
        elif previous != connection["status"]:
            # The old rules service only ever told of status changes.
            status = connection["status"]
            self._emit(legacy_status_changed(record.company, connection, previous, status))

    def emit(self, body: Json) -> None:
        """Record a webhook body and send it (when webhooks are configured and automatic)."""
        self._emit(body)

    def _emit(self, body: Json) -> None:
        self.events.append(copy.deepcopy(body))
        if self.webhooks.url and self.webhooks.secrets and self.webhooks.auto:
            self.deliver(body)

    def deliver(
        self,
        body: Json | bytes,
        *,
        message_id: str | None = None,
        secrets: list[str] | None = None,
        header_prefix: str | None = None,
    ) -> "asyncio.Task[Json]":
        """Send one message in the background; the task's result is its delivery record."""
        if not self.webhooks.url:
            raise ErrorAnswer(409, "No webhook url is configured: POST /_sandbox/config first.")
        try:
            secrets = check_secrets(secrets or self.webhooks.secrets)
        except ValueError as exc:
            raise ErrorAnswer(409 if not secrets else 400, str(exc)) from None
        raw = body if isinstance(body, bytes) else encode(body)
        event = {} if isinstance(body, bytes) else body
        record: Json = {
            "messageId": message_id or new_message_id(),
            "eventType": event.get("eventType") or event.get("RuleType"),
            "eventId": event.get("id") or event.get("AlertId"),
            "pending": True,
            "attempts": 0,
            "status": None,
            "delivered": False,
            "errors": [],
        }
        self.deliveries.append(record)
        sender = WebhookSender(
            self.webhooks.url,
            secrets,
            client=self.http,
            retry_delays=self.webhooks.retry_delays,
            header_prefix=header_prefix or self.webhooks.header_prefix,
            on_attempt=lambda attempt: log_attempt(record["eventType"], attempt),
            slots=self._sending,
        )
        task = asyncio.create_task(self._deliver(sender, record, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, sender: WebhookSender, record: Json, raw: bytes) -> Json:
        try:
            async with sender:
                delivery = await sender.send(raw, message_id=record["messageId"])
        except asyncio.CancelledError:
            record.update(pending=False, errors=[*record["errors"], "cancelled at shutdown"])
            raise
        record.update(
            pending=False,
            attempts=delivery.attempts,
            status=delivery.status,
            delivered=delivery.delivered,
            errors=delivery.errors,
        )
        return record

    async def close(self) -> None:
        """Cancel deliveries still retrying; the HTTP client is closed by the app's lifespan."""
        for handle in self._reads:
            handle.cancel()
        self._reads.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def dump(self) -> Json:
        return {
            "config": self.webhooks.to_json(),
            "companies": [record.dump() for record in self.companies.values()],
            "events": self.events,
            "deliveries": self.deliveries,
            "requests": self.requests,
            "faults": [rule.to_json() for rule in self.faults.rules],
        }


def log_attempt(event_type: str | None, attempt: Attempt) -> None:
    """One INFO line per delivery attempt: message, event type, URL, attempt and its answer."""
    if attempt.error is None:
        outcome = f"answered {attempt.status}"
    elif attempt.status is None:
        outcome = f"no answer ({attempt.error})"
    else:
        outcome = f"answered {attempt.error.removeprefix('HTTP ')}"
    if attempt.error is not None:
        outcome += (
            f"; next attempt in {attempt.retry_in:g} s"
            if attempt.retry_in is not None
            else "; no attempts left, not delivered"
        )
    log.info(
        "webhook %s (%s) -> %s attempt %d/%d: %s",
        attempt.message_id,
        event_type or "no event type",
        attempt.url,
        attempt.number,
        attempt.of,
        outcome,
    )


def _is_active(record: CompanyRecord) -> bool:
    return any(c["status"] == "Linked" for c in record.live_connections())

"""A local stand-in for Codat: its onboarding API, errors and webhooks, plus an admin API.

The API part answers like Codat's (see CODAT.md); `/_sandbox/...` lets tests and the demo play
the customer (authorize, fail, deauthorize), delete things, script faults and send webhooks.
State lives in memory; every mutation is synchronous, so the single event loop serialises them.
"""

import asyncio
import base64
import contextlib
import copy
import fnmatch
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from processor.platforms import PLATFORMS
from processor.sender import DEFAULT_RETRY_DELAYS, WebhookSender, check_secrets, new_message_id
from processor.webhook_bodies import (
    company_event,
    connection_error,
    connection_event,
    encode,
    legacy_status_changed,
    new_company,
    new_connection,
    utc_now,
)

# Codat does not publish the partner expense connection's key and name: these are placeholders.
PARTNER_EXPENSE_KEY = "expn"
PARTNER_EXPENSE_NAME = "Partner Expense"

IDEMPOTENCY_TTL_SECONDS = 90 * 60
DAILY_QUOTA = 1000
COMPANY_NAME_DISALLOWED = re.compile(r"[^A-Za-z0-9\s\-',&@.?!]")
PLATFORM_KEY = re.compile(r"[a-z]{4}")
# Returned by the app to uvicorn, which then closes the connection without any answer.
DROPPED = "sandbox: connection dropped by a fault rule"

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]

ERROR_MESSAGES = {
    400: "The request is not valid.",
    401: "Unauthorized.",
    402: "The account limit for this plan has been reached.",
    403: "This API key is not allowed to use this resource.",
    404: "Not found.",
    409: "The resource is not ready yet.",
    422: "The request cannot be processed.",
    429: "Too many requests in a short time; retry later.",
    500: "An internal error happened; retry later.",
    503: "The API is offline for maintenance; retry later.",
}


# --- Codat's errors -------------------------------------------------------------------------


class CodatError(Exception):
    """An error answer in Codat's shape."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        errors: Sequence[tuple[str, str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message or ERROR_MESSAGES.get(status, "Error.")
        self.errors = list(errors)
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> Json:
        validation = None
        if self.errors:
            items = [
                {"itemId": item, "message": message, "validatorName": validator}
                for item, message, validator in self.errors
            ]
            validation = {"errors": items, "warnings": []}
        return {
            "statusCode": self.status,
            "service": "PublicApi",
            "error": self.message,
            "correlationId": uuid.uuid4().hex,
            "validation": validation,
            "canBeRetried": "Unknown",
            "detailedErrorCode": 0,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(item: str, message: str, validator: str = "Validation") -> CodatError:
    return CodatError(400, f"Validation failed: {message}", errors=[(item, message, validator)])


# --- Fault rules ----------------------------------------------------------------------------


@dataclass
class FaultRule:
    """A scripted misbehaviour for requests matching a method and a path glob."""

    path: str
    method: str = "*"
    status: int | None = None
    times: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    hold_after_create: float | None = None
    for_seconds: float | None = None
    started: float = field(default_factory=time.monotonic)

    FIELDS: ClassVar[dict[str, str]] = {
        "path": "path",
        "method": "method",
        "status": "status",
        "times": "times",
        "retryAfter": "retry_after",
        "delay": "delay",
        "drop": "drop",
        "holdAfterCreate": "hold_after_create",
        "forSeconds": "for_seconds",
    }

    TYPES: ClassVar[dict[str, type]] = {
        "method": str,
        "status": int,
        "times": int,
        "retryAfter": str,
        "delay": float,
        "drop": bool,
        "holdAfterCreate": float,
        "forSeconds": float,
    }

    @classmethod
    def from_json(cls, data: Any) -> "FaultRule":
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise ValueError(f"A fault rule is an object with a 'path' glob, got {data!r}.")
        unknown = set(data) - set(cls.FIELDS)
        if unknown:
            raise ValueError(
                f"Unknown fault rule fields {sorted(unknown)}: expected {sorted(cls.FIELDS)}."
            )
        values = {}
        for key, value in data.items():
            kind = cls.TYPES.get(key, str)
            if value is None:
                continue
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"Fault rule field {key!r} must be true or false, got {value!r}.")
            try:
                values[cls.FIELDS[key]] = kind(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Fault rule field {key!r} must be a {kind.__name__}, got {value!r}."
                ) from None
        rule = cls(**values)
        rule.method = rule.method.upper()
        if rule.status is not None and not 400 <= rule.status <= 599:
            raise ValueError(f"Fault rule status must be a 4xx or 5xx, got {rule.status!r}.")
        if rule.times is None and rule.for_seconds is None:
            rule.times = 1
        return rule

    def to_json(self) -> Json:
        return {key: getattr(self, attr) for key, attr in self.FIELDS.items()}

    def expired(self, now: float) -> bool:
        return self.for_seconds is not None and now - self.started >= self.for_seconds

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and fnmatch.fnmatchcase(path, self.path)

    def error(self) -> CodatError:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else {}
        return CodatError(self.status or 500, headers=headers)


class Faults:
    """Fault rules in order; each matching request consumes one use of the first match."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def take(self, method: str, path: str) -> FaultRule | None:
        now = time.monotonic()
        self.rules = [rule for rule in self.rules if not rule.expired(now)]
        for rule in self.rules:
            if rule.matches(method, path):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                return rule
        return None


# --- Idempotency ----------------------------------------------------------------------------


@dataclass
class StoredResponse:
    """The first answer to an idempotency key, or None while that request is in flight."""

    fingerprint: str
    expires: float
    status: int | None = None
    body: bytes = b""
    media_type: str = "application/json"


class IdempotencyKeys:
    """Codat's Idempotency-Key semantics: replay, 409 while in flight, 422 on a new body."""

    def __init__(self, ttl: float = IDEMPOTENCY_TTL_SECONDS) -> None:
        self.ttl = ttl
        self.records: dict[str, StoredResponse] = {}

    def begin(self, key: str, fingerprint: str) -> StoredResponse | None:
        """Claim the key, or return the replayable first answer; raises CodatError otherwise."""
        now = time.monotonic()
        record = self.records.get(key)
        if record is not None and record.expires <= now:
            record = None
        if record is None:
            self.records[key] = StoredResponse(fingerprint, now + self.ttl)
            return None
        if record.fingerprint != fingerprint:
            raise CodatError(422, f"Idempotency-Key {key} was already used with another request.")
        if record.status is None:
            raise CodatError(409, f"A request with Idempotency-Key {key} is still in progress.")
        return record

    def finish(self, key: str, response: Response) -> None:
        if response.status_code == 429:
            self.records.pop(key, None)
            return
        record = self.records.get(key)
        if record is None:  # expired while in flight: nothing left to replay
            return
        record.status = response.status_code
        record.body = bytes(response.body)
        record.media_type = response.media_type or "application/json"

    def abandon(self, key: str) -> None:
        self.records.pop(key, None)


def fingerprint(request: Request, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True) if body.strip() else ""
    except ValueError:
        canonical = body.decode(errors="replace")
    return f"{request.method} {request.url.path} {canonical}"


# --- State ----------------------------------------------------------------------------------


@dataclass
class CompanyRecord:
    """A company, all its connections (deleted ones kept) and sandbox switches."""

    company: Json
    connections: dict[str, Json] = field(default_factory=dict)
    deleted_connections: set[str] = field(default_factory=set)
    deleted: bool = False
    legacy: bool = False

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
        }


@dataclass
class WebhookConfig:
    """Where and how the sandbox delivers webhooks."""

    url: str | None = None
    secrets: list[str] = field(default_factory=list)
    auto: bool = True
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    header_prefix: str = "webhook"

    def to_json(self) -> Json:
        return {
            "webhookUrl": self.url,
            "secrets": self.secrets,
            "autoWebhooks": self.auto,
            "retryDelays": list(self.retry_delays),
            "headerPrefix": self.header_prefix,
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
        self._tasks: set[asyncio.Task[Json]] = set()

    def authorized(self, header: str | None) -> bool:
        return hmac.compare_digest((header or "").encode(), self.authorization.encode())

    def rate_limit_headers(self) -> dict[str, str]:
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        active = sum(1 for r in self.companies.values() if not r.deleted and _is_active(r))
        limit = DAILY_QUOTA * (1 + active)
        return {
            "X-Rate-Limit-Limit": str(limit),
            "X-Rate-Limit-Remaining": str(max(0, limit - len(self.requests))),
            "X-Rate-Limit-Reset": f"{tomorrow.isoformat()}T00:00:00Z",
        }

    # Lookups

    def company(self, company_id: str) -> CompanyRecord:
        record = self.companies.get(company_id)
        if record is None or record.deleted:
            raise CodatError(404, f"No company was found with id {company_id}.")
        return record

    def connection(self, record: CompanyRecord, connection_id: str) -> Json:
        connection = record.connections.get(connection_id)
        if connection is None or connection_id in record.deleted_connections:
            raise CodatError(404, f"Data connection {connection_id} was not found.")
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
            source_type="Expense",
            status="Linked",
        )
        return self._add_connection(record, connection)

    def _add_connection(self, record: CompanyRecord, connection: Json) -> Json:
        record.connections[connection["id"]] = connection
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
            raise CodatError(409, f"Connection {connection['id']} is already Linked.")
        connection["lastSync"] = utc_now()
        for error in connection["dataConnectionErrors"]:
            if error.get("status") == "Active":
                error.update(status="Resolved", resolvedOnUtc=utc_now())
        event = "connection.connected" if previous == "PendingAuth" else "connection.reconnected"
        return self._set_status(record, connection, "Linked", event)

    def fail(self, record: CompanyRecord, connection: Json, message: str) -> Json:
        connection["dataConnectionErrors"].append(connection_error(message))
        self._emit_connection("connection.failed", record, connection, connection["status"])
        return connection

    def deauthorize(self, record: CompanyRecord, connection: Json) -> Json:
        if connection["status"] != "Linked":
            raise CodatError(
                409,
                f"Only a Linked connection can lose its authorization; connection"
                f" {connection['id']} is {connection['status']}.",
            )
        return self._set_status(record, connection, "Deauthorized", "connection.disconnected")

    def delete_connection(self, record: CompanyRecord, connection: Json) -> None:
        record.deleted_connections.add(connection["id"])
        self._emit_connection("connection.deleted", record, connection, connection["status"])

    def delete_company(self, record: CompanyRecord) -> None:
        record.deleted = True
        self._emit(company_event("company.deleted", record.company))

    def _set_status(self, record: CompanyRecord, connection: Json, status: str, event: str) -> Json:
        previous = connection["status"]
        connection["status"] = status
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
            raise CodatError(409, "No webhook url is configured: POST /_sandbox/config first.")
        try:
            secrets = check_secrets(secrets or self.webhooks.secrets)
        except ValueError as exc:
            raise CodatError(409 if not secrets else 400, str(exc)) from None
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


def _is_active(record: CompanyRecord) -> bool:
    return any(c["status"] == "Linked" for c in record.live_connections())


# --- Request helpers ------------------------------------------------------------------------


def sandbox_of(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def json_object(request: Request, *, required: bool = True) -> Json:
    body = await request.body()
    if not body.strip() and not required:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise CodatError(400, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise CodatError(400, f"The request body must be a JSON object, got {type(data).__name__}.")
    return data


def company_fields(data: Json) -> tuple[str, str | None, dict[str, str]]:
    """Validate a create-company body; return the name with disallowed characters stripped."""
    name, description, tags = data.get("name"), data.get("description"), data.get("tags") or {}
    if not isinstance(name, str) or not name.strip():
        raise invalid("name", "The company name is required and must be a non-empty string.")
    name = COMPANY_NAME_DISALLOWED.sub("", name).strip()
    if not name:
        raise invalid("name", "The company name has no allowed character (A-Za-z0-9 -',&@.?!).")
    if description is not None and not isinstance(description, str):
        raise invalid("description", "The description must be a string.")
    if not isinstance(tags, dict) or len(tags) > 10:
        raise invalid("tags", "Tags must be an object with at most 10 entries.")
    for key, value in tags.items():
        if not 1 <= len(key) <= 27 or not isinstance(value, str) or len(value) > 100:
            raise invalid(
                f"tags.{key}", "Tag keys have 1-27 characters; values are strings of <= 100."
            )
    return name, description, tags


def page_params(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", "1"))
        page_size = int(request.query_params.get("pageSize", "100"))
    except ValueError:
        raise CodatError(400, "Error parsing query: page and pageSize must be integers.") from None
    if page < 1 or not 1 <= page_size <= 5000:
        raise CodatError(400, "Error parsing query: page >= 1 and 1 <= pageSize <= 5000.")
    return page, page_size


def query_filter(query: str | None) -> Callable[[Json], bool]:
    """Codat's query language, only its `field=value` and `field!=value` joined by `&&`."""
    if not query:
        return lambda _item: True
    clauses = []
    for clause in query.split("&&"):
        match = re.fullmatch(r"\s*(\w+)\s*(!=|=)\s*(.*?)\s*", clause)
        if match is None:
            raise CodatError(400, f"Error parsing query: malformed clause {clause!r}.")
        clauses.append(match.groups())
    return lambda item: all(
        (str(item.get(name)) == value) == (op == "=") for name, op, value in clauses
    )


# --- API endpoints --------------------------------------------------------------------------


def codat_api(endpoint: Endpoint) -> Endpoint:
    """Wrap an API endpoint with Codat's authentication, errors and Idempotency-Key."""

    async def wrapped(request: Request) -> Response:
        sandbox = sandbox_of(request)
        if not sandbox.authorized(request.headers.get("authorization")):
            return CodatError(401).response()
        key = request.headers.get("idempotency-key")
        if request.method not in ("POST", "PATCH") or not key:
            return await _answer(endpoint, request)
        try:
            stored = sandbox.idempotency.begin(key, fingerprint(request, await request.body()))
        except CodatError as exc:
            return exc.response()
        if stored is not None:
            request.scope["sandbox"].replayed = True
            return Response(stored.body, stored.status or 200, media_type=stored.media_type)
        try:
            response = await _answer(endpoint, request)
        except BaseException:
            sandbox.idempotency.abandon(key)
            raise
        sandbox.idempotency.finish(key, response)
        return response

    return wrapped


async def _answer(endpoint: Endpoint, request: Request) -> Response:
    try:
        response = await endpoint(request)
    except CodatError as exc:
        response = exc.response()
    context: RequestContext = request.scope["sandbox"]
    if context.hold_after_create:
        await asyncio.sleep(context.hold_after_create)
    return response


async def create_company(request: Request) -> Response:
    name, description, tags = company_fields(await json_object(request))
    return JSONResponse(sandbox_of(request).create_company(name, description, tags))


async def get_company(request: Request) -> Response:
    record = sandbox_of(request).company(request.path_params["company_id"])
    return JSONResponse(record.as_codat())


async def create_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    key = (await json_object(request)).get("platformKey")
    if not isinstance(key, str) or not PLATFORM_KEY.fullmatch(key):
        raise invalid("platformKey", f"platformKey must be 4 lowercase letters, got {key!r}.")
    if key not in PLATFORMS:
        raise invalid("platformKey", f"No integration has the platform key {key!r}.", "Integration")
    return JSONResponse(sandbox.create_connection(record, key))


async def list_connections(request: Request) -> Response:
    record = sandbox_of(request).company(request.path_params["company_id"])
    page, page_size = page_params(request)
    keep = query_filter(request.query_params.get("query"))
    connections = [c for c in record.live_connections() if keep(c)]
    path = request.url.path
    links = {
        "self": {"href": path},
        "current": {"href": f"{path}?page={page}&pageSize={page_size}"},
    }
    if page * page_size < len(connections):
        links["next"] = {"href": f"{path}?page={page + 1}&pageSize={page_size}"}
    if page > 1:
        links["previous"] = {"href": f"{path}?page={page - 1}&pageSize={page_size}"}
    start = (page - 1) * page_size
    return JSONResponse(
        {
            "results": connections[start : start + page_size],
            "pageNumber": page,
            "pageSize": page_size,
            "totalResults": len(connections),
            "_links": links,
        }
    )


async def get_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    return JSONResponse(sandbox.connection(record, request.path_params["connection_id"]))


async def update_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    connection = sandbox.connection(record, request.path_params["connection_id"])
    data = await json_object(request)
    if set(data) != {"status"} or data["status"] != "Unlinked":
        raise invalid("status", f'The only update is {{"status": "Unlinked"}}, got {data!r}.')
    return JSONResponse(sandbox.unlink(record, connection))


async def create_partner_expense_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    return JSONResponse(sandbox.create_partner_expense(record))


# --- Admin endpoints ------------------------------------------------------------------------


def _target(request: Request) -> tuple[Sandbox, CompanyRecord, Json]:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    return sandbox, record, sandbox.connection(record, request.path_params["connection_id"])


async def admin_config(request: Request) -> Response:
    sandbox, data = sandbox_of(request), await json_object(request)
    config = sandbox.webhooks
    url, prefix = data.get("webhookUrl", config.url), data.get("headerPrefix", config.header_prefix)
    try:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"webhookUrl must be an http(s) URL or null, got {url!r}.")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"headerPrefix must be a non-empty string, got {prefix!r}.")
        secrets = check_secrets(data["secrets"]) if data.get("secrets") else []
        delays = tuple(float(d) for d in data.get("retryDelays", config.retry_delays))
    except (ValueError, TypeError, AttributeError) as exc:
        raise CodatError(400, f"Invalid webhook config: {exc}") from None
    config.url, config.header_prefix, config.retry_delays = url, prefix, delays
    if "secrets" in data:
        config.secrets = secrets
    config.auto = bool(data.get("autoWebhooks", config.auto))
    return JSONResponse(config.to_json())


async def admin_authorize(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    return JSONResponse(sandbox.authorize(record, connection))


async def admin_fail(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    data = await json_object(request, required=False)
    message = str(data.get("errorMessage", "The user cancelled the authorization."))
    return JSONResponse(sandbox.fail(record, connection, message))


async def admin_deauthorize(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    return JSONResponse(sandbox.deauthorize(record, connection))


async def admin_delete_connection(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    sandbox.delete_connection(record, connection)
    return Response(status_code=204)


async def admin_delete_company(request: Request) -> Response:
    sandbox = sandbox_of(request)
    sandbox.delete_company(sandbox.company(request.path_params["company_id"]))
    return Response(status_code=204)


async def admin_legacy(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    record.legacy = bool((await json_object(request, required=False)).get("legacy", True))
    return JSONResponse({"companyId": record.company["id"], "legacy": record.legacy})


async def admin_set_faults(request: Request) -> Response:
    try:
        data = json.loads(await request.body())
        rules = [FaultRule.from_json(item) for item in data] if isinstance(data, list) else None
    except (ValueError, TypeError) as exc:
        raise CodatError(400, f"Invalid fault rules: {exc}") from None
    if rules is None:
        raise CodatError(400, "Fault rules are a JSON list of rule objects.")
    sandbox = sandbox_of(request)
    sandbox.faults.rules.extend(rules)
    return JSONResponse([rule.to_json() for rule in sandbox.faults.rules])


async def admin_clear_faults(request: Request) -> Response:
    sandbox_of(request).faults.rules.clear()
    return JSONResponse([])


async def admin_state(request: Request) -> Response:
    return JSONResponse(sandbox_of(request).dump())


async def admin_send_webhook(request: Request) -> Response:
    sandbox, data = sandbox_of(request), await json_object(request)
    body = data.get("body")
    if "raw" in data:
        body = str(data["raw"]).encode()
    elif not isinstance(body, dict):
        raise CodatError(400, "Give 'body' (a webhook body object) or 'raw' (a string).")
    repeat, concurrent = int(data.get("repeat", 1)), bool(data.get("concurrent", False))
    message_id = data.get("messageId") or new_message_id()

    def send() -> "asyncio.Task[Json]":
        return sandbox.deliver(
            body,
            message_id=message_id,
            secrets=data.get("secrets"),
            header_prefix=data.get("headerPrefix"),
        )

    if concurrent:
        records = list(await asyncio.gather(*(send() for _ in range(repeat))))
    else:
        records = [await send() for _ in range(repeat)]
    return JSONResponse({"deliveries": records})


async def codat_error_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, CodatError):
        return exc.response()
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return CodatError(status, f"No route for {request.method} {request.url.path}.").response()


# --- The app --------------------------------------------------------------------------------

COMPANY = "/companies/{company_id}"
CONNECTION = COMPANY + "/connections/{connection_id}"
ADMIN_CONNECTION = "/_sandbox" + CONNECTION

ROUTES = [
    Route("/companies", codat_api(create_company), methods=["POST"]),
    Route(COMPANY, codat_api(get_company), methods=["GET"]),
    Route(COMPANY + "/connections", codat_api(create_connection), methods=["POST"]),
    Route(COMPANY + "/connections", codat_api(list_connections), methods=["GET"]),
    Route(CONNECTION, codat_api(get_connection), methods=["GET"]),
    Route(CONNECTION, codat_api(update_connection), methods=["PATCH"]),
    Route(
        COMPANY + "/sync/expenses/connections/partnerExpense",
        codat_api(create_partner_expense_connection),
        methods=["POST"],
    ),
    Route("/_sandbox/config", admin_config, methods=["POST"]),
    Route("/_sandbox/state", admin_state, methods=["GET"]),
    Route("/_sandbox/faults", admin_set_faults, methods=["POST"]),
    Route("/_sandbox/faults", admin_clear_faults, methods=["DELETE"]),
    Route("/_sandbox/webhooks/send", admin_send_webhook, methods=["POST"]),
    Route(ADMIN_CONNECTION + "/authorize", admin_authorize, methods=["POST"]),
    Route(ADMIN_CONNECTION + "/fail", admin_fail, methods=["POST"]),
    Route(ADMIN_CONNECTION + "/deauthorize", admin_deauthorize, methods=["POST"]),
    Route(ADMIN_CONNECTION, admin_delete_connection, methods=["DELETE"]),
    Route("/_sandbox" + COMPANY, admin_delete_company, methods=["DELETE"]),
    Route("/_sandbox" + COMPANY + "/legacy", admin_legacy, methods=["POST"]),
]


class SandboxApp(Starlette):
    """The Starlette app behind a fault layer that can delay, fail or drop API requests.

    The fault layer sits outside Starlette's own middleware because dropping a connection means
    returning a value to uvicorn, which then closes it unanswered; Starlette would swallow it.
    """

    @property
    def sandbox(self) -> Sandbox:
        sandbox: Sandbox = self.state.sandbox
        return sandbox

    async def __call__(  # type: ignore[override]
        self, scope: Scope, receive: Receive, send: Send
    ) -> str | None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await super().__call__(scope, receive, send)
            return None
        headers = dict((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        entry: Json = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "idempotencyKey": headers.get("idempotency-key"),
            "status": None,
            "fault": None,
            "replayed": False,
        }
        self.sandbox.requests.append(entry)
        context = scope["sandbox"] = RequestContext()
        try:
            return await self._faulted(scope, receive, self._observed(send, entry), entry)
        finally:
            entry["replayed"] = context.replayed

    def _observed(self, send: Send, entry: Json) -> Send:
        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                extra = self.sandbox.rate_limit_headers().items()
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in extra),
                ]
            await send(message)

        return observed

    async def _faulted(self, scope: Scope, receive: Receive, send: Send, entry: Json) -> str | None:
        rule = self.sandbox.faults.take(scope["method"], scope["path"])
        if rule is None:
            await super().__call__(scope, receive, send)
            return None
        entry["fault"] = rule.to_json()
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.hold_after_create is not None:
            scope["sandbox"].hold_after_create = rule.hold_after_create
            messages: list[Message] = []

            async def keep(message: Message) -> None:
                messages.append(message)

            await super().__call__(scope, receive, keep)
            if not (rule.drop or rule.status):
                for message in messages:
                    await send(message)
                return None
        if rule.drop:
            return DROPPED
        if rule.status:
            await rule.error().response()(scope, receive, send)
            return None
        await super().__call__(scope, receive, send)
        return None


def create_app(
    api_key: str,
    *,
    webhook_url: str | None = None,
    secrets: Sequence[str] = (),
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
) -> Starlette:
    """The sandbox app; its lifespan opens the HTTP client webhooks go out through."""
    webhooks = WebhookConfig(webhook_url, list(secrets), retry_delays=tuple(retry_delays))
    sandbox = Sandbox(api_key, webhooks)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient() as client:
            sandbox.http = client
            try:
                yield
            finally:
                await sandbox.close()
                sandbox.http = None

    app = SandboxApp(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={CodatError: codat_error_handler, HTTPException: codat_error_handler},
    )
    app.state.sandbox = sandbox
    return app


# --- Running it -----------------------------------------------------------------------------


class LoopbackServer:
    """Runs an ASGI app under uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: ASGIApp, *, port: int = 0, startup_timeout: float = 10.0) -> None:
        self.app = app
        self.port = port
        self.startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"The server on {self.url} did not start.")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SandboxServer(LoopbackServer):
    """The sandbox on a free loopback port: `with SandboxServer(api_key=...) as sb: sb.url`."""

    def __init__(
        self,
        *,
        api_key: str,
        webhook_url: str | None = None,
        secrets: Sequence[str] = (),
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        port: int = 0,
    ) -> None:
        app = create_app(
            api_key, webhook_url=webhook_url, secrets=secrets, retry_delays=retry_delays
        )
        super().__init__(app, port=port)
        self.api_key = api_key
        self.sandbox: Sandbox = app.state.sandbox


def serve_sandbox(
    host: str, port: int, api_key: str, webhook_url: str | None, secrets: Sequence[str]
) -> None:
    """Run the sandbox in the foreground until interrupted."""
    app = create_app(api_key, webhook_url=webhook_url, secrets=secrets)
    uvicorn.run(app, host=host, port=port, log_level="info")

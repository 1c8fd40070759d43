"""`GET /openapi.json`: the OpenAPI 3.1 description of every route of the app.

Built in code rather than kept as a file so that the states and limits it names are the ones
the endpoints check (`STATES`, `MAX_LIMIT`); `tests/http/test_openapi.py` validates it and every
answer the tests see against it, and runs schemathesis over it against a live server.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from handlers.state import STATES
from processor.http.queries import MAX_LIMIT
from processor.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

JSON = "application/json"
HTML = "text/html; charset=utf-8"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: Schema, headers: Schema | None = None) -> Schema:
    answer: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _error(description: str) -> Schema:
    return _json(description, _ref("Error"))


def _html(description: str) -> Schema:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def _redirect(description: str) -> Schema:
    return {
        "description": description,
        "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
    }


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [{"type": "null"}, schema]}


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
BEARER_401 = {
    "description": "no bearer token, or not one of STATUS_API_TOKEN",
    "headers": {"WWW-Authenticate": {"required": True, "schema": STRING}},
    "content": {JSON: {"schema": _ref("Error")}},
}

SUMMARY: Schema = {
    "id": STRING,
    "name": NULLABLE_STRING,
    "state": _nullable(_ref("State")),
    "accountingConnection": _nullable(_ref("AccountingConnection")),
    "expenseConnection": _nullable(_ref("ExpenseConnection")),
    "updatedAt": NULLABLE_STRING,
    "lastError": _nullable(_ref("LastError")),
    "dataReadAt": NULLABLE_STRING,
    "configuration": _ref("Configuration"),
    "sync": _ref("SyncSummary"),
}
DOCUMENT: Schema = {
    "pending": {"type": "array", "items": _ref("Command")},
    "failed": {"type": "array", "items": _ref("Command")},
    "pendingEvents": {"type": "integer", "minimum": 0},
    "events": {"type": "array", "items": _ref("Event")},
    "codatCalls": {
        "type": "array",
        "description": "The newest calls to Codat about the company (at most 200), oldest first",
        "items": _ref("CodatCall"),
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": "What was expected and what was found.",
        "required": ["error"],
        "properties": {"error": STRING},
        "additionalProperties": False,
    },
    "WebhookAccepted": {
        "type": "object",
        "required": ["status", "messageId"],
        "properties": {
            "status": {"enum": ["stored", "duplicate", "requeued"]},
            "messageId": STRING,
        },
        "additionalProperties": False,
    },
    "State": {"enum": list(STATES)},
    "AccountingConnection": {
        "type": "object",
        "required": ["id", "platformKey", "platformName", "status"],
        "properties": {
            "id": STRING,
            "platformKey": NULLABLE_STRING,
            "platformName": NULLABLE_STRING,
            "status": NULLABLE_STRING,
        },
        "additionalProperties": False,
    },
    "ExpenseConnection": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {"id": STRING, "status": NULLABLE_STRING},
        "additionalProperties": False,
    },
    "LastError": {
        "type": "object",
        "required": ["message", "at"],
        "properties": {"message": STRING, "at": NULLABLE_STRING},
        "additionalProperties": False,
    },
    "Configuration": {
        "type": "object",
        "description": "The expense configuration as last read back from Codat: unchecked "
        "until read, then set (all three ids) or not_set.",
        "required": ["status", "bankAccount", "supplier", "customer", "checkedAt"],
        "properties": {
            "status": {"enum": ["unchecked", "not_set", "set"]},
            "bankAccount": NULLABLE_STRING,
            "supplier": NULLABLE_STRING,
            "customer": NULLABLE_STRING,
            "checkedAt": NULLABLE_STRING,
        },
        "additionalProperties": False,
    },
    "Sync": {
        "type": "object",
        "description": "One expense sync as Codat reported it (webhooks, status endpoints); "
        "the counts are null when Codat has not listed its transactions.",
        "required": [
            "syncId",
            "at",
            "outcome",
            "failureStage",
            "error",
            "transactionCount",
            "failingCount",
        ],
        "properties": {
            "syncId": STRING,
            "at": STRING,
            "outcome": {"enum": ["successful", "failed", None]},
            "failureStage": NULLABLE_STRING,
            "error": NULLABLE_STRING,
            "transactionCount": {"type": ["integer", "null"], "minimum": 0},
            "failingCount": {"type": ["integer", "null"], "minimum": 0},
        },
        "additionalProperties": False,
    },
    "SyncTransaction": {
        "type": "object",
        "required": ["id", "status", "errorMessage"],
        "properties": {"id": STRING, "status": NULLABLE_STRING, "errorMessage": NULLABLE_STRING},
        "additionalProperties": False,
    },
    "SyncSummary": {
        "type": "object",
        "description": "The company's expense syncs: health is failing (the newest sync "
        "failed), silent (configured, no sync for SYNC_SILENT_AFTER_SECONDS), healthy, or null "
        "(not configured, no sync reported); failingTransactions are the newest sync's (20 at "
        "most).",
        "required": [
            "health",
            "lastSuccessfulAt",
            "lastFailedAt",
            "latest",
            "previousOutcome",
            "failingTransactions",
        ],
        "properties": {
            "health": {"enum": ["healthy", "failing", "silent", None]},
            "lastSuccessfulAt": NULLABLE_STRING,
            "lastFailedAt": NULLABLE_STRING,
            "latest": _nullable(_ref("Sync")),
            "previousOutcome": {"enum": ["successful", "failed", None]},
            "failingTransactions": {"type": "array", "items": _ref("SyncTransaction")},
        },
        "additionalProperties": False,
    },
    "SyncWithTransactions": {
        "type": "object",
        "description": "One sync and every transaction Codat listed for it (null: not listed).",
        "required": ["sync", "transactions"],
        "properties": {
            "sync": _ref("Sync"),
            "transactions": {
                "type": ["array", "null"],
                "items": _ref("SyncTransaction"),
            },
        },
        "additionalProperties": False,
    },
    "Syncs": {
        "type": "object",
        "required": ["companyId", "syncs", "next"],
        "properties": {
            "companyId": STRING,
            "syncs": {"type": "array", "items": _ref("SyncWithTransactions")},
            "next": NULLABLE_STRING,
        },
        "additionalProperties": False,
    },
    "Choice": {
        "type": "object",
        "description": "One of Codat's choices (an account, supplier, customer, tracking "
        "category or tax rate), with Codat's fields.",
        "required": ["id"],
        "properties": {"id": STRING, "name": NULLABLE_STRING},
    },
    "ExpenseOptions": {
        "type": "object",
        "description": "The choices for the company's expense configuration, as last fetched "
        "from Codat (mapping options, suppliers, customers).",
        "required": [
            "companyId",
            "fetchedAt",
            "expenseProvider",
            "bankAccounts",
            "accounts",
            "trackingCategories",
            "taxRates",
            "suppliers",
            "customers",
        ],
        "properties": {
            "companyId": STRING,
            "fetchedAt": STRING,
            "expenseProvider": NULLABLE_STRING,
            **{
                name: {"type": "array", "items": _ref("Choice")}
                for name in (
                    "bankAccounts",
                    "accounts",
                    "trackingCategories",
                    "taxRates",
                    "suppliers",
                    "customers",
                )
            },
        },
        "additionalProperties": False,
    },
    "CompanySummary": {
        "type": "object",
        "description": "What a company's state says: the query API's list items.",
        "required": list(SUMMARY),
        "properties": SUMMARY,
        "additionalProperties": False,
    },
    "Command": {
        "type": "object",
        "description": "A call to Codat the state machine asked for, and what became of it.",
        "required": [
            "command",
            "status",
            "causedBy",
            "attempts",
            "nextAttemptAt",
            "lastError",
            "createdAt",
            "updatedAt",
        ],
        "properties": {
            "command": STRING,
            "status": {"enum": ["pending", "failed"]},
            "causedBy": {"type": ["integer", "null"]},
            "attempts": {"type": "integer", "minimum": 0},
            "nextAttemptAt": NULLABLE_STRING,
            "lastError": NULLABLE_STRING,
            "createdAt": STRING,
            "updatedAt": STRING,
        },
        "additionalProperties": False,
    },
    "CodatCall": {
        "type": "object",
        "description": "One HTTP call to Codat about the company: the operation (method and "
        "path, ids replaced), the status (an HTTP status, timeout or connection_error), and "
        "Codat's correlationId on an error answer.",
        "required": ["at", "operation", "status", "durationMs", "correlationId", "error"],
        "properties": {
            "at": STRING,
            "operation": STRING,
            "status": STRING,
            "durationMs": {"type": "number", "minimum": 0},
            "correlationId": NULLABLE_STRING,
            "error": NULLABLE_STRING,
        },
        "additionalProperties": False,
    },
    "Event": {
        "type": "object",
        "required": [
            "seq",
            "id",
            "messageId",
            "eventType",
            "source",
            "format",
            "connectionId",
            "generatedDate",
            "receivedAt",
            "deliveries",
            "outcome",
        ],
        "properties": {
            "seq": {"type": "integer"},
            "id": NULLABLE_STRING,
            "messageId": STRING,
            "eventType": STRING,
            "source": STRING,
            "format": STRING,
            "connectionId": NULLABLE_STRING,
            "generatedDate": STRING,
            "receivedAt": STRING,
            "deliveries": {"type": "integer", "minimum": 1},
            "outcome": {"enum": ["applied", "stale", "duplicate", "ignored", "failed", "pending"]},
        },
        "additionalProperties": False,
    },
    "CompanyDocument": {
        "type": "object",
        "description": "The status document: the summary, the commands and the event log.",
        "required": [*SUMMARY, *DOCUMENT],
        "properties": {**SUMMARY, **DOCUMENT},
        "additionalProperties": False,
    },
    "CompanyPage": {
        "type": "object",
        "required": ["companies", "next"],
        "properties": {
            "companies": {"type": "array", "items": _ref("CompanySummary")},
            "next": NULLABLE_STRING,
        },
        "additionalProperties": False,
    },
    "Health": {
        "oneOf": [
            {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"const": "ok"}},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["status", "reason"],
                "properties": {"status": {"const": "degraded"}, "reason": STRING},
                "additionalProperties": False,
            },
        ]
    },
    "Unhealthy": {
        "type": "object",
        "required": ["status", "error"],
        "properties": {"status": {"const": "error"}, "error": STRING},
        "additionalProperties": False,
    },
}

WEBHOOK_HEADERS = [
    {
        "name": f"{prefix}-{part}",
        "in": "header",
        "required": False,
        "description": f"Svix {part} ({'webhook' if prefix == 'webhook' else 'svix'}-* set)",
        "schema": STRING,
    }
    for prefix in ("webhook", "svix")
    for part in ("id", "timestamp", "signature")
]

# An empty state is no filter, as a form's "any state" sends it.
ANY_STATE: Schema = {"anyOf": [_ref("State"), {"const": ""}]}
QUERY_ERRORS = {
    "401": BEARER_401,
    "403": _error("the query API is disabled: STATUS_API_TOKEN is empty"),
}

SIGNED_OUT = _redirect("not signed in: to the sign-in form at /")

PATHS: dict[str, Schema] = {
    "/webhooks/codat": {
        "post": {
            "operationId": "receiveWebhook",
            "summary": "A Svix-signed webhook from Codat, stored durably before the answer",
            "parameters": WEBHOOK_HEADERS,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": _json("stored, or already stored", _ref("WebhookAccepted")),
                "400": _error("missing or malformed headers or body"),
                "401": _error("bad signature, or a timestamp outside +-5 minutes"),
                "413": _error("body over WEBHOOK_MAX_BODY_BYTES"),
                "503": _error("the store could not commit the event: Codat retries"),
            },
        }
    },
    "/companies": {
        "get": {
            "operationId": "listCompanies",
            "summary": "A page of company summaries ordered by id, optionally in one state",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "state", "in": "query", "schema": ANY_STATE},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "the `next` of a previous answer",
                    "schema": STRING,
                },
            ],
            "responses": {
                "200": _json("one page", _ref("CompanyPage")),
                "400": _error("a state, limit or cursor not as expected"),
                **QUERY_ERRORS,
            },
        }
    },
    # Before /companies/{companyId}, whose template would match this path too.
    "/companies/{companyId}/options": {
        "get": {
            "operationId": "getCompanyOptions",
            "summary": "The choices for a company's expense configuration, as last fetched",
            "security": [{"bearer": []}],
            "parameters": [{"name": "companyId", "in": "path", "required": True, "schema": STRING}],
            "responses": {
                "200": _json("the stored choices", _ref("ExpenseOptions")),
                "400": _error("not a company id"),
                "404": _error("no such company in the store, or its choices not fetched yet"),
                **QUERY_ERRORS,
            },
        }
    },
    "/companies/{companyId}/syncs": {
        "get": {
            "operationId": "getCompanySyncs",
            "summary": "The company's expense syncs as recorded, newest first, with every "
            "transaction Codat listed (read from the store: no Codat call)",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "companyId", "in": "path", "required": True, "schema": STRING},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "the `next` of a previous answer",
                    "schema": STRING,
                },
            ],
            "responses": {
                "200": _json("one page of syncs", _ref("Syncs")),
                "400": _error("not a company id, or a limit or cursor not as expected"),
                "404": _error("no such company in the store"),
                **QUERY_ERRORS,
            },
        }
    },
    "/companies/{companyId}": {
        "get": {
            "operationId": "getCompany",
            "summary": "The status document of one company",
            "security": [{"bearer": []}],
            "parameters": [{"name": "companyId", "in": "path", "required": True, "schema": STRING}],
            "responses": {
                "200": _json("the status document", _ref("CompanyDocument")),
                "400": _error("not a company id"),
                "404": _error("no such company in the store"),
                **QUERY_ERRORS,
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Whether the store answers and commits, and whether webhooks get in",
            "responses": {
                "200": _json("ok, or degraded with the reason", _ref("Health")),
                "503": _json("the store cannot commit", _ref("Unhealthy")),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics of this process; the store's figures read at the scrape",
            "security": [{"bearer": []}],
            "responses": {
                "200": {
                    "description": "the Prometheus text format",
                    "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
                },
                "401": {
                    **BEARER_401,
                    "description": "no bearer token, or not one of METRICS_TOKEN "
                    "(STATUS_API_TOKEN when METRICS_TOKEN is unset)",
                },
                "403": _error("metrics are disabled: no token configured"),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
        }
    },
    "/": {
        "get": {
            "operationId": "dashboard",
            "summary": "Dashboard: the funnel, stuck companies, failed commands, failing and "
            "silent syncs, health; or sign-in",
            "parameters": [
                {
                    "name": f"{state}_after",
                    "in": "query",
                    "description": f"how long in {state} makes a company stuck: 24h, 10m, "
                    "3d, 90s (at most 3650 days); empty: the default (STUCK_*_SECONDS)",
                    "schema": {"type": "string", "pattern": "^([0-9]{1,9}[smhd]?)?$"},
                }
                for state in ("pending_auth", "linked")
            ],
            "responses": {
                "200": _html("the funnel, or the sign-in form when not signed in"),
                "400": _html("a threshold that is not a duration"),
            },
        }
    },
    "/sign-in": {
        "post": {
            "operationId": "signIn",
            "summary": "Sign in to the dashboard with a token of the query API",
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["token"],
                            "properties": {"token": STRING},
                        }
                    }
                },
            },
            "responses": {
                "303": _redirect("signed in: an HttpOnly, SameSite=Strict session cookie"),
                "400": _html("no token in the form"),
                "401": _html("the token is not one of STATUS_API_TOKEN"),
                "403": _html(
                    "the query API, and so the dashboard, is disabled; or the form came from "
                    "another site (Sec-Fetch-Site)"
                ),
                "413": _html("a form over 4096 bytes"),
            },
        }
    },
    "/sign-out": {
        "post": {
            "operationId": "signOut",
            "summary": "Forget the session cookie",
            "responses": {
                "303": _redirect("signed out: to the sign-in form"),
                "403": _html("the form came from another site (Sec-Fetch-Site)"),
            },
        }
    },
    "/dashboard/companies": {
        "get": {
            "operationId": "dashboardCompanies",
            "summary": "Companies, newest first, by state; or those whose id or name starts with q",
            "parameters": [
                {"name": "state", "in": "query", "schema": ANY_STATE},
                {"name": "q", "in": "query", "schema": STRING},
                {
                    "name": "before",
                    "in": "query",
                    "description": "the cursor of an Older link: the page after it",
                    "schema": STRING,
                },
            ],
            "responses": {
                "200": _html("one page of companies"),
                "303": SIGNED_OUT,
                "400": _html("a state or cursor not as expected"),
            },
        }
    },
    "/dashboard/companies/{companyId}": {
        "get": {
            "operationId": "dashboardCompany",
            "summary": "One company: why it is where it is, its commands and timeline",
            "parameters": [{"name": "companyId", "in": "path", "required": True, "schema": STRING}],
            "responses": {
                "200": _html("the company page"),
                "303": SIGNED_OUT,
                "400": _html("not a company id"),
                "404": _html("no such company in the store"),
            },
        }
    },
}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "codat-expenses",
            "version": metadata.version("codat-expenses"),
            "description": "Onboards customers onto Codat's Sync for Expenses, driven by "
            "Codat's Svix-signed webhooks; read-only status queries and dashboard.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document())

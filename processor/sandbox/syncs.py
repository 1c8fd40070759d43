"""Expense syncs and Codat's rate limit in the stand-in: the status endpoints and their admin.

Each company keeps the syncs the admin API scripted, with their transactions. Codat's status
endpoints answer from them in Codat's shapes (`CompanySyncStatus`, `Transactions`); the admin
API records a sync and sends its webhook (current, legacy or none at all: a missed webhook),
and sends `client.rateLimit.reached`/`reset`.

What Codat does not publish, the stand-in chooses, and says so: `syncStatusCode` of a failed
sync (Codat's examples show only 2000 and 2040: the stand-in uses 4000 with `syncStatus`
`Failed`), the order of `list/status` (newest first here), and the answer for a company with
no sync yet (404, as for an unknown sync).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from processor.sandbox.api import json_object, paged, sandbox_of
from processor.sandbox.errors import ErrorAnswer, Json
from processor.sandbox.state import CompanyRecord
from processor.sandbox.webhook_bodies import (
    legacy_sync_event,
    rate_limit_event,
    sync_event,
    utc_now,
)

SUCCESS_CODE, NO_DATA_CODE, FAILED_CODE = 2000, 2040, 4000
# A transaction's status on the status endpoints (TransactionStatus) and in a sync webhook.
STATUS_STATUSES = ("Unknown", "Pending", "ValidationError", "Completed", "PushError")
WEBHOOK_STATUS_OF = {"ValidationError": "Failed"}
STATUS_OF_WEBHOOK = {"Failed": "ValidationError"}
FAILING = frozenset({"ValidationError", "PushError"})
WEBHOOK_KINDS = ("current", "legacy", "none")


def status_of(sync: Json) -> Json:
    """A sync as `.../syncs/{syncId}/status` answers it (CompanySyncStatus)."""
    return {key: sync[key] for key in STATUS_KEYS}


STATUS_KEYS = (
    "companyId",
    "syncId",
    "syncStatusCode",
    "syncStatus",
    "errorMessage",
    "syncExceptionMessage",
    "syncUtc",
    "dataPushed",
)


def new_sync(record: CompanyRecord, data: Json) -> Json:
    """A sync as the admin API describes it, checked; its outcome follows its transactions
    unless `outcome` says otherwise."""
    listed = data.get("transactions", [])
    if not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
        raise ErrorAnswer(400, "transactions must be a list of {id?, status, message?} objects.")
    transactions = [_transaction(item) for item in listed]
    outcome = data.get("outcome")
    if outcome is None:
        outcome = "failed" if any(t["status"] in FAILING for t in transactions) else "successful"
    if outcome not in ("successful", "failed"):
        raise ErrorAnswer(400, f"outcome must be successful or failed, got {outcome!r}.")
    failed = outcome == "failed"
    first_error = next((t["message"] for t in transactions if t.get("message")), "")
    error = str(data.get("errorMessage") or (first_error if failed else ""))
    sync_id = str(data.get("syncId") or uuid.uuid4())
    if any(s["syncId"] == sync_id for s in record.syncs):
        raise ErrorAnswer(409, f"Sync {sync_id} already exists for this company.")
    code = FAILED_CODE if failed else (SUCCESS_CODE if transactions else NO_DATA_CODE)
    return {
        "companyId": record.company["id"],
        "syncId": sync_id,
        "syncStatusCode": code,
        "syncStatus": "Failed" if failed else "Complete",
        "errorMessage": error,
        "syncExceptionMessage": "",
        "syncUtc": str(data.get("syncUtc") or utc_now()),
        "dataPushed": any(t["status"] == "Completed" for t in transactions),
        "transactions": transactions,
    }


def _transaction(item: dict[str, Any]) -> Json:
    status = STATUS_OF_WEBHOOK.get(item.get("status"), item.get("status"))  # type: ignore[arg-type]
    if status not in STATUS_STATUSES:
        raise ErrorAnswer(
            400,
            f"transaction status must be one of {', '.join(STATUS_STATUSES)} (or Failed), "
            f"got {item.get('status')!r}.",
        )
    found: Json = {
        "transactionId": str(item.get("id") or uuid.uuid4()),
        "status": status,
        "integrationType": "expenses",
    }
    if item.get("message"):
        found["message"] = str(item["message"])
    return found


def sync_webhook(
    record: CompanyRecord, sync: Json, kind: str, listed: bool, stage: str = "Pushing"
) -> Json | None:
    """The body Codat sends about `sync`: current, legacy (with `stage` as the failure stage of
    a failed sync) or none."""
    failed = sync["syncStatusCode"] == FAILED_CODE
    if kind == "none":
        return None
    if kind == "legacy":
        failure_stage = stage if failed else None
        return legacy_sync_event(record.company, sync["syncId"], failure_stage=failure_stage)
    transactions = [
        {
            "id": t["transactionId"],
            "status": WEBHOOK_STATUS_OF.get(t["status"], t["status"]),
            "errorMessage": t.get("message"),
        }
        for t in sync["transactions"]
    ]
    event_type = "expenses.sync.unsuccessful" if failed else "expenses.sync.successful"
    return sync_event(event_type, record.company, sync["syncId"], transactions if listed else None)


# --- Codat's endpoints ----------------------------------------------------------------------


def _company(request: Request) -> CompanyRecord:
    return sandbox_of(request).company(request.path_params["company_id"])


def _newest(record: CompanyRecord, *, successful: bool = False) -> Json:
    syncs = [s for s in record.syncs if not successful or s["syncStatusCode"] != FAILED_CODE]
    if not syncs:
        kind = "successful sync" if successful else "sync"
        raise ErrorAnswer(404, f"No {kind} was found for company {record.company['id']}.")
    return max(syncs, key=lambda s: s["syncUtc"])


def _sync(request: Request) -> Json:
    record, sync_id = _company(request), request.path_params["sync_id"]
    for sync in record.syncs:
        if sync["syncId"] == sync_id:
            return sync
    raise ErrorAnswer(404, f"No sync was found with id {sync_id}.")


async def latest_sync(request: Request) -> Response:
    return JSONResponse(status_of(_newest(_company(request))))


async def last_successful_sync(request: Request) -> Response:
    return JSONResponse(status_of(_newest(_company(request), successful=True)))


async def list_syncs(request: Request) -> Response:
    syncs = sorted(_company(request).syncs, key=lambda s: s["syncUtc"], reverse=True)
    return JSONResponse([status_of(sync) for sync in syncs])


async def get_sync(request: Request) -> Response:
    return JSONResponse(status_of(_sync(request)))


async def list_sync_transactions(request: Request) -> Response:
    return paged(request, _sync(request)["transactions"])


# --- The admin API --------------------------------------------------------------------------


async def admin_sync(request: Request) -> Response:
    """Record a sync and send its webhook: `{"transactions": [...], "outcome"?, "webhook"?:
    current|legacy|none, "listTransactions"?: bool, "syncId"?, "syncUtc"?, "errorMessage"?,
    "failureStage"? (legacy bodies)}`."""
    sandbox = sandbox_of(request)
    record = _company(request)
    data = await json_object(request, required=False)
    kind = data.get("webhook") or ("legacy" if record.legacy else "current")
    if kind not in WEBHOOK_KINDS:
        raise ErrorAnswer(400, f"webhook must be one of {', '.join(WEBHOOK_KINDS)}, got {kind!r}.")
    sync = new_sync(record, data)
    record.syncs.append(sync)
    stage = str(data.get("failureStage") or "Pushing")
    body = sync_webhook(record, sync, kind, bool(data.get("listTransactions", True)), stage)
    if body is not None:
        sandbox.emit(body)
    return JSONResponse(
        {"sync": status_of(sync), "transactions": sync["transactions"], "webhook": body}
    )


async def admin_rate_limit(request: Request) -> Response:
    """Send `client.rateLimit.reached` or `reset`: `{"event": "reached"|"reset",
    "quotaRemaining"?, "expiryDate"?}` (expiry: the next midnight UTC by default)."""
    sandbox = sandbox_of(request)
    data = await json_object(request)
    event = data.get("event")
    if event not in ("reached", "reset"):
        raise ErrorAnswer(400, f"event must be reached or reset, got {event!r}.")
    limit = sandbox.daily_limit()
    expiry = data.get("expiryDate") or sandbox.rate_limit_headers()["X-Rate-Limit-Reset"]
    try:
        remaining = int(data.get("quotaRemaining", 0 if event == "reached" else limit))
    except (TypeError, ValueError):
        raise ErrorAnswer(400, "quotaRemaining must be an integer.") from None
    body = rate_limit_event(
        f"client.rateLimit.{event}",
        daily_quota=limit,
        quota_remaining=remaining,
        expiry_date=str(expiry),
    )
    sandbox.emit(body)
    return JSONResponse(body)

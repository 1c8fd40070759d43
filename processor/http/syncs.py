"""A company's expense syncs as recorded: `GET /companies/{id}/syncs` and `codat-expenses syncs`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from handlers.syncs import SyncRecord
from processor.http.documents import sync_record
from processor.http.errors import HttpError
from processor.http.queries import COMPANY_ID, MAX_LIMIT, authorize
from processor.http.services import services
from store import Queries

SUFFIX = "/syncs"


def syncs_document(
    store: Queries, company_id: str, *, limit: int, after: str | None = None
) -> dict[str, Any] | None:
    """A page of the company's syncs, newest first, each with every transaction Codat listed;
    None if the store has never heard of the company."""
    with store.read_snapshot():
        page = store.syncs(company_id, limit=limit, after=after)
        known = bool(page.syncs) or store.company(company_id) is not None
    if not known:
        return None
    syncs = []
    for row in page.syncs:
        record = SyncRecord.from_dict(row.data)
        listed = record.transactions
        syncs.append(
            {
                "sync": sync_record(record),
                "transactions": None
                if listed is None
                else [{"id": t.id, "status": t.status, "errorMessage": t.error} for t in listed],
            }
        )
    next_page = encode(page.next_after) if page.next_after else None
    return {"companyId": company_id, "syncs": syncs, "next": next_page}


async def get_syncs(request: Request) -> Response:
    """The company's recorded syncs (read-only: no Codat call), paginated by `cursor`."""
    authorize(request)
    # The raw path, as for get_company: a company id, then /syncs, and nothing else.
    raw = request.scope["path"].removeprefix("/companies/")
    company_id = raw.removesuffix(SUFFIX) if raw.endswith(SUFFIX) else raw
    if not COMPANY_ID.fullmatch(company_id):
        raise HttpError(400, f"expected a Codat company id (a UUID), found {company_id[:100]!r}")
    params = request.query_params
    raw_limit = params.get("limit", "100")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise HttpError(400, f"expected limit between 1 and {MAX_LIMIT}, found {raw_limit!r}")
    after = None
    if params.get("cursor"):
        after = decode(params["cursor"])
        if after is None:
            raise HttpError(400, "expected a cursor from a previous answer's 'next', found another")
    limit = int(raw_limit)
    found = await services(request).readers.run(
        lambda store: syncs_document(store, company_id, limit=limit, after=after)
    )
    if found is None:
        raise HttpError(404, f"no company {company_id!r} in the store")
    return JSONResponse(found)


def encode(after: str) -> str:
    return base64.urlsafe_b64encode(f"sync:{after}".encode()).decode().rstrip("=")


def decode(cursor: str) -> str | None:
    """The store's cursor inside an answer's `next`; None for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    at, _, sync_id = text.removeprefix("sync:").partition(" ")
    return text.removeprefix("sync:") if text.startswith("sync:") and at and sync_id else None

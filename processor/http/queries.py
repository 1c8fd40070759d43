"""The read-only query API: bearer-token auth, company documents, lists and health."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from handlers.state import STATES
from processor import clock
from processor.http.documents import Health, company_document, options_document, summary
from processor.http.errors import HttpError
from processor.http.services import services
from store import Queries

COMPANY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", re.ASCII)
MAX_LIMIT = 1000


def authorize(request: Request) -> None:
    """Raise 403 or 401 unless the request carries a configured bearer token."""
    tokens = services(request).settings.status_tokens
    if not tokens:
        raise HttpError(
            403,
            "the query API is disabled: set STATUS_API_TOKEN to one or more tokens to enable it",
        )
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise HttpError(
            401,
            "expected an 'Authorization: Bearer <token>' header",
            {"WWW-Authenticate": "Bearer"},
        )
    given = presented.strip().encode()
    # Compare against every token so timing says nothing about which one nearly matched.
    matches = [hmac.compare_digest(given, token.encode()) for token in tokens]
    if not any(matches):
        raise HttpError(
            401,
            "the bearer token is not one of the configured STATUS_API_TOKEN",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


async def get_company(request: Request) -> Response:
    authorize(request)
    # The raw path, not the route's capture: a route's `$` also matches before a final newline.
    company_id = request.scope["path"].removeprefix("/companies/")
    if not COMPANY_ID.fullmatch(company_id):
        raise HttpError(400, f"expected a Codat company id (a UUID), found {company_id[:100]!r}")
    document = await services(request).readers.run(
        lambda store: company_document(store, company_id, health=health(request))
    )
    if document is None:
        raise HttpError(404, f"no company {company_id!r} in the store")
    return JSONResponse(document)


def health(request: Request) -> Health:
    """The sync health verdict as of now, with the configured silence."""
    return Health(silent_after=services(request).settings.sync_silent_after)


async def get_options(request: Request) -> Response:
    """The stored choices for the company's expense configuration (read-only: no Codat call)."""
    authorize(request)
    # The raw path, as for get_company: a company id, then /options, and nothing else.
    raw = request.scope["path"].removeprefix("/companies/")
    company_id = raw.removesuffix("/options") if raw.endswith("/options") else raw
    if not COMPANY_ID.fullmatch(company_id):
        raise HttpError(400, f"expected a Codat company id (a UUID), found {company_id[:100]!r}")

    def read(store: Queries) -> dict[str, Any] | str:
        snapshot = store.options(company_id)
        if snapshot is not None:
            return options_document(snapshot)
        row = store.company(company_id)
        if row is None:
            return f"no company {company_id!r} in the store"
        return (
            f"no choices stored for company {company_id!r} (state {row.state}): they are "
            "fetched once Codat has read its data"
        )

    found = await services(request).readers.run(read)
    if isinstance(found, str):
        raise HttpError(404, found)
    return JSONResponse(found)


async def list_companies(request: Request) -> Response:
    authorize(request)
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in STATES:
        raise HttpError(400, f"expected state to be one of {', '.join(STATES)}, found {state!r}")
    raw_limit = params.get("limit", "100")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise HttpError(400, f"expected limit between 1 and {MAX_LIMIT}, found {raw_limit!r}")
    after = None
    if params.get("cursor"):
        after = decode_cursor(params["cursor"])
        if after is None:
            raise HttpError(400, "expected a cursor from a previous answer's 'next', found another")
    limit = int(raw_limit)
    verdict = health(request)

    def page(store: Queries) -> dict[str, Any]:
        found = store.companies(state=state, limit=limit, after=after)
        return {
            "companies": [summary(row, row.company_id, verdict) for row in found.companies],
            "next": encode_cursor(found.next_after) if found.next_after else None,
        }

    return JSONResponse(await services(request).readers.run(page))


async def healthz(request: Request) -> Response:
    """200 when the store answers a read and commits a one-row write; 503 saying why if not."""
    app = services(request)
    try:
        await app.readers.run(lambda store: store.ping())
        await asyncio.wait_for(
            app.writer.call(lambda store: store.heartbeat(clock.now())),
            timeout=app.settings.busy_timeout + 1,
        )
    except TimeoutError:
        return _unhealthy("the store did not commit a write in time (locked or stalled)")
    except Exception as failure:
        return _unhealthy(f"the store cannot commit: {failure}")
    reason = app.health.degraded()
    if reason is not None:
        return JSONResponse({"status": "degraded", "reason": reason})
    return JSONResponse({"status": "ok"})


def _unhealthy(message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=503)


def encode_cursor(company_id: str) -> str:
    return base64.urlsafe_b64encode(company_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    return decoded if COMPANY_ID.fullmatch(decoded) else None

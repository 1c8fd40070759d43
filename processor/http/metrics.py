"""`GET /metrics`: this process's Prometheus metrics, behind a bearer token.

The token is METRICS_TOKEN's (one or more); when it is unset, any of the query API's. The
gauges that describe the whole store are read from it at each scrape.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from handlers.state import STATES
from processor import clock
from processor.http.errors import HttpError
from processor.http.services import services
from processor.metrics import CONTENT_TYPE, StoreFigures
from store import Store


def _authorize(request: Request) -> None:
    settings = services(request).settings
    named = settings.metrics_tokens is not None
    tokens = settings.metrics_tokens if named else settings.status_tokens
    variable = "METRICS_TOKEN" if named else "STATUS_API_TOKEN (METRICS_TOKEN is unset)"
    if not tokens:
        raise HttpError(
            403, f"metrics are disabled: {variable} holds no token; set METRICS_TOKEN to enable"
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise HttpError(
            401,
            "expected an 'Authorization: Bearer <token>' header",
            {"WWW-Authenticate": "Bearer"},
        )
    given = presented.strip().encode()
    if not any([hmac.compare_digest(given, token.encode()) for token in tokens]):
        raise HttpError(
            401,
            f"the bearer token is not one of the configured {variable}",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def _figures(store: Store) -> StoreFigures:
    with store.read_snapshot():
        oldest = store.oldest_pending_received_at()
        counts = store.state_counts()
        return StoreFigures(
            companies={state: counts.get(state, 0) for state in STATES} | counts,
            events_pending=store.count_events(pending=True),
            commands_failed=len(store.failed_effects()),
            oldest_pending_seconds=(
                max(0.0, (clock.parse(clock.now()) - clock.parse(oldest)).total_seconds())
                if oldest
                else 0.0
            ),
        )


async def metrics(request: Request) -> Response:
    _authorize(request)
    app = services(request)
    app.metrics.observe_store(await app.readers.run(_figures))
    return Response(app.metrics.exposition(), media_type=CONTENT_TYPE)

"""`POST /webhooks/codat`: verify, store durably, then acknowledge."""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import NoReturn

from prometheus_client import Counter, Histogram
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from processor import clock
from processor.http.errors import HttpError
from processor.http.services import services
from processor.intake.bodies import BodyError, parse_body, webhook_event
from processor.intake.signature import MALFORMED, SIGNATURE, SignatureError
from processor.metrics import Metrics

log = logging.getLogger(__name__)
TOO_LARGE = "too_large"
STORE_UNAVAILABLE = "store_unavailable"
# The headers read or kept besides `webhook-*` and `svix-*` (see `_headers`).
_ALSO_READ = frozenset({b"content-length", b"content-type", b"user-agent"})


class BodyTooLarge(Exception):
    """The body is over the configured limit."""


async def receive_webhook(request: Request) -> Response:
    request.state.started = time.perf_counter()
    app = services(request)
    limit = app.settings.max_body_bytes
    headers = _headers(request.scope)
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        _too_large(request, limit, f"{declared} bytes declared")
    try:
        body = await _read_body(request, limit)
    except BodyTooLarge:
        _too_large(request, limit, "more than that was sent")
    except ClientDisconnect:
        message = "the client went away before sending the whole body"
        _rejected(request, 400, MALFORMED, message, message)
    try:
        verified = app.verifier.verify(body, headers)
        data = parse_body(body)
    except SignatureError as failure:
        shown = None if failure.reason == SIGNATURE else failure.message
        _rejected(request, failure.status, failure.reason, failure.message, shown)
    except BodyError as failure:
        _rejected(request, 400, MALFORMED, str(failure), str(failure))
    event = webhook_event(
        data,
        body=body,
        message_id=verified.message_id,
        timestamp=verified.timestamp,
        headers=verified.headers,
        received_at=clock.now(),
    )
    try:
        result = await app.writer.append(event)
    except Exception as failure:
        _rejected(
            request,
            503,
            STORE_UNAVAILABLE,
            f"the event could not be stored, retry later: {failure}",
            str(failure),
            level=logging.ERROR,
        )
    app.health.accepted(result.status)
    app.worker.wake()
    seconds = time.perf_counter() - request.state.started
    counted, timed = _measures(app.metrics, result.status)
    counted.inc()
    timed.observe(seconds)
    log.info(
        "webhook %s %s: %s",
        verified.message_id,
        event.event_type,
        result.status,
        extra={
            "outcome": result.status,
            "message_id": verified.message_id,
            "event_type": event.event_type,
            "company_id": event.company_id,
            "seq": result.seq,
            "latency_ms": round(seconds * 1000, 2),
        },
    )
    return JSONResponse({"status": result.status, "messageId": verified.message_id})


def _headers(scope: Scope) -> dict[str, str]:
    """The headers the intake reads or keeps, in one pass over the raw list: for a repeated
    name the first, as Starlette's `Headers.get` (whose lookups, one scan each, and `items()`
    cost more than the rest of the verification)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name.startswith((b"webhook-", b"svix-")) or name in _ALSO_READ:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


@lru_cache(maxsize=64)
def _measures(metrics: Metrics, outcome: str) -> tuple[Counter, Histogram]:
    """The webhook counter and latency histogram of one outcome (`labels` takes a lock and
    builds the key at every call)."""
    return metrics.webhooks.labels(outcome, ""), metrics.intake_seconds.labels(outcome)


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(request: Request, limit: int, found: str) -> NoReturn:
    message = f"expected a body of at most {limit} bytes, found {found}"
    _rejected(request, 413, TOO_LARGE, message, message, {"Connection": "close"})


def _rejected(
    request: Request,
    status: int,
    reason: str,
    message: str,
    loggable: str | None,
    headers: dict[str, str] | None = None,
    *,
    level: int = logging.WARNING,
) -> NoReturn:
    """Count and log a refused webhook (never its secret or signature), then refuse it."""
    app = services(request)
    app.health.rejected(reason)
    seconds = time.perf_counter() - request.state.started
    app.metrics.webhooks.labels("rejected", reason).inc()
    app.metrics.intake_seconds.labels("rejected").observe(seconds)
    message_id = request.headers.get("webhook-id") or request.headers.get("svix-id") or ""
    log.log(
        level,
        "webhook rejected: %d %s, message %s%s",
        status,
        reason,
        repr(message_id[:80]) if message_id else "without an id",
        f": {loggable}" if loggable else "",
        extra={
            "outcome": "rejected",
            "reason": reason,
            "status": status,
            "message_id": message_id[:80] or None,
            "latency_ms": round(seconds * 1000, 2),
        },
    )
    raise HttpError(status, message, headers)

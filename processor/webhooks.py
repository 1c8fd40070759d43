"""`POST /webhooks/codat`: verify, store durably, then acknowledge."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from processor import clock
from processor.intake import BodyError, parse_body, webhook_event
from processor.signature import SignatureError

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """The body is over the configured limit."""


async def receive_webhook(request: Request) -> Response:
    services = request.state.services
    limit = services.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _too_large(limit, f"{declared} bytes declared")
    try:
        body = await _read_body(request, limit)
    except BodyTooLarge:
        return _too_large(limit, "more than that was sent")
    except ClientDisconnect:
        return error(400, "the client went away before sending the whole body")
    try:
        verified = services.verifier.verify(body, request.headers)
        data = parse_body(body)
    except SignatureError as failure:
        return error(failure.status, failure.message)
    except BodyError as failure:
        return error(400, str(failure))
    event = webhook_event(
        data,
        body=body,
        message_id=verified.message_id,
        timestamp=verified.timestamp,
        headers=verified.headers,
        received_at=clock.now(),
    )
    try:
        result = await services.writer.append(event)
    except Exception as failure:
        log.error("webhook %s not stored: %s", verified.message_id, failure)
        return error(503, f"the event could not be stored, retry later: {failure}")
    services.worker.wake()
    return JSONResponse({"status": result.status, "messageId": verified.message_id})


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int, found: str) -> Response:
    response = error(413, f"expected a body of at most {limit} bytes, found {found}")
    response.headers["Connection"] = "close"
    return response


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)

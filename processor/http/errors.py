"""Errors that carry their HTTP status; the app maps them to JSON once.

Endpoints raise; `handlers()` turns every error into `{"error": "..."}` with its status, so no
endpoint writes an error response by hand and none can forget a header.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

log = logging.getLogger(__name__)


class HttpError(Exception):
    """An answer other than success: its status, a message saying what was expected and what
    was found, and any headers it needs (WWW-Authenticate, Connection)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error(exc.status, exc.message, exc.headers)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 404:
        detail = f"no route {request.url.path!r}"
    return error(exc.status_code, detail, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
    return error(500, "internal error; it is logged")


def handlers() -> dict[type[Exception] | int, ExceptionHandler]:
    """The app's exception handlers: ours, Starlette's 404/405, and anything unexpected."""
    return {HttpError: _http_error, HTTPException: _starlette_error, Exception: _server_error}

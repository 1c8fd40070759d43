"""Every call to Codat counted, timed and logged, whatever the caller: an httpx transport.

Wrapped around the transport the Codat client sends through, it sees each request once per
attempt (retries included) with its outcome: the HTTP status, or `timeout` /
`connection_error` when there was no answer. The operation is the method and the path with
its ids replaced (`GET /companies/{id}/connections/{id}`), so that the metric's labels stay
few. On an error answer, Codat's `correlationId` is logged (what Codat's support asks for).
"""

from __future__ import annotations

import json
import logging
import re
import time

import httpx

from processor.codat.calls import CallLog
from processor.metrics import Metrics

log = logging.getLogger(__name__)
# A path segment that is an id: a UUID, or anything with a digit that is not a plain word.
_ID = re.compile(
    r"/(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[^/]*\d[^/]*)(?=/|$)"
)


def operation(request: httpx.Request) -> str:
    """`METHOD /path/{id}/...`: the request's method and path with its ids replaced."""
    return f"{request.method} {_ID.sub('/{id}', request.url.path)}"


class MeteredTransport(httpx.AsyncBaseTransport):
    """Counts, times and logs each request sent through `inner`."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        metrics: Metrics,
        calls: CallLog | None = None,
        *,
        quiet: bool = False,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        # Quiet (a command line's calls, whose errors the command itself explains): each call
        # logged at DEBUG only, seen with -v.
        self.quiet = quiet
        # Where each call about a company is noted for its timeline (None: nowhere).
        self.calls = calls

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = operation(request)
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TimeoutException:
            self._record(request, name, "timeout", started, logging.WARNING)
            raise
        except httpx.TransportError as error:
            self._record(request, name, "connection_error", started, logging.WARNING, str(error))
            raise
        self._note_quota(response)
        correlation = None
        if response.status_code >= 400:
            await response.aread()
            correlation = _correlation_id(response.content)
        level = logging.WARNING if response.status_code >= 400 else logging.INFO
        self._record(request, name, str(response.status_code), started, level, None, correlation)
        return response

    def _note_quota(self, response: httpx.Response) -> None:
        """Codat's daily quota and what is left of it, as its answer's headers say."""
        for header, gauge in (
            ("X-Rate-Limit-Remaining", self.metrics.codat_quota_remaining),
            ("X-Rate-Limit-Limit", self.metrics.codat_quota_limit),
        ):
            value = response.headers.get(header, "")
            if value.isdigit():
                gauge.set(int(value))

    def _record(
        self,
        request: httpx.Request,
        name: str,
        status: str,
        started: float,
        level: int,
        error: str | None = None,
        correlation: str | None = None,
    ) -> None:
        seconds = time.perf_counter() - started
        duration_ms = round(seconds * 1000, 1)
        self.metrics.codat_calls.labels(name, status).inc()
        self.metrics.codat_seconds.labels(name).observe(seconds)
        fields = {"operation": name, "status": status, "duration_ms": duration_ms}
        if correlation:
            fields["correlation_id"] = correlation
        if error:
            fields["error"] = error
        log.log(logging.DEBUG if self.quiet else level, "Codat %s: %s", name, status, extra=fields)
        if self.calls is not None:
            self.calls.note(request.url.path, name, status, duration_ms, correlation, error)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _correlation_id(content: bytes) -> str | None:
    try:
        body = json.loads(content)
    except ValueError:
        return None
    found = body.get("correlationId") if isinstance(body, dict) else None
    return str(found)[:100] if found else None

"""The HTTP transport under the Codat client: aiohttp's, behind httpx's interface.

httpx's own transport cost about 0.9 ms of CPU per call to Codat, on the event loop the webhooks
share: with 100 companies onboarding at once it made the partner connection wait 400 ms (p50).
aiohttp's client, through `httpx_aiohttp.AiohttpTransport`, costs a fraction of that. The client
(`processor.codat.client`) and the metering (`MeteredTransport`) stay httpx's.

What httpx_aiohttp maps wrongly is mapped again here, by the aiohttp error it wraps: a server that
closes the connection or resets it is a network error (`connection_error` in the metrics and on
the company's timeline; RemoteProtocolError, as httpx says of a connection closed before or in
the middle of an answer), not a connect timeout; only aiohttp's timeouts are timeouts; and an
aiohttp error it leaves unmapped (a malformed answer) is an httpx error too, so that the client
retries it like any other transport failure instead of failing the command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class CodatTransport(AiohttpTransport):
    """`AiohttpTransport` raising the httpx error that says what happened."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _remapping(request):
            response = await super().handle_async_request(request)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Remapping(response.stream, request),
            request=request,
            extensions=response.extensions,
        )


class _Remapping(httpx.AsyncByteStream):
    """An answer's body, whose read errors are remapped like the request's."""

    def __init__(self, inner: httpx.AsyncByteStream | httpx.SyncByteStream, request: httpx.Request):
        assert isinstance(inner, httpx.AsyncByteStream)
        self.inner = inner
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _remapping(self.request):
            async for chunk in self.inner:
                yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextmanager
def _remapping(request: httpx.Request) -> Iterator[None]:
    """Errors of a request or of reading its answer, raised as `remapped` says (an httpx error
    already right is raised as it is)."""
    try:
        yield
    except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as error:
        mapped = remapped(error, request)
        if mapped is error:
            raise
        raise mapped from error


def remapped(error: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error for what aiohttp raised (directly, or wrapped by httpx_aiohttp)."""
    cause = error.__cause__ if isinstance(error, httpx.TransportError) else error
    cause = cause or error
    message = f"{type(cause).__name__}: {cause}".rstrip(": ")
    kind: type[httpx.TransportError]
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(cause, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(
        cause,
        aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError | aiohttp.ClientPayloadError,
    ):
        kind = httpx.RemoteProtocolError  # closed before or in the middle of an answer
    elif isinstance(cause, aiohttp.ClientError):
        kind = httpx.ReadError
    elif isinstance(error, httpx.TransportError):
        return error
    else:
        kind = httpx.ReadError
    return kind(message, request=request)

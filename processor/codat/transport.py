"""HTTP/1.1 keep-alive connections for the Codat client, straight over asyncio streams.

httpx's default transport (httpcore over anyio) costs ~0.6 ms of CPU per request before any
byte is sent, and its pool scans every connection at each request (a `select` per idle one):
measured against the stand-in, a Codat call cost serve 0.8 ms of CPU unloaded and ~2.5 ms
under the end-to-end bench, more than half of serve's CPU there. This transport does what the
Codat client needs and nothing more: one request per connection at a time, the idle ones kept
per origin for `keepalive_expiry` seconds, answers read whole (Content-Length, chunked, or up
to the end), TLS through httpx's own SSL context (its certificates and SSL_CERT_FILE), and
httpx's timeouts (connect, read and write, each for one operation) and exceptions, so that the
client and its callers see what they saw before. Content-Encoding is left to httpx, which
decodes the body as it reads it from the stream returned here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
DEFAULT_PORTS = {"http": 80, "https": 443}
NO_BODY = frozenset({204, 304})
MAX_HEADER_BYTES = 64 * 1024


class _Connection:
    """One TCP (or TLS) connection, used by one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def usable(self, now: float, expiry: float) -> bool:
        """Still open, nothing unread (a server's close arrives as EOF), not idle too long."""
        return (
            now - self.idle_since < expiry
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """An httpx transport: HTTP/1.1 with keep-alive over asyncio streams (see the module)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = 5.0,
        max_idle_per_origin: int = 32,
    ) -> None:
        self._ssl_context = ssl_context
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_origin = max_idle_per_origin
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self.connections_opened = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme}'.")
        origin = (scheme, url.host, url.port or DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        head = _request_head(request, body)
        connection = self._take(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            status, reason, headers, content, keep = await _exchange(
                connection, head + body, request.method, timeouts
            )
        except BaseException:
            connection.close()
            raise
        if keep:
            self._keep(origin, connection)
        else:
            connection.close()
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self.keepalive_expiry):
                return connection
            connection.close()
        return None

    def _keep(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self.max_idle_per_origin:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            context = self._ssl_context
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                    limit=MAX_HEADER_BYTES,
                )
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from error
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(f"{type(error).__name__}: {error}") from error
        self.connections_opened += 1
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers; the body, read whole, is sent with its Content-Length."""
    target = request.url.raw_path or b"/"
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            continue
        lines.append(name + b": " + value)
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _exchange(
    connection: _Connection, data: bytes, method: str, timeouts: dict[str, float | None]
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
    """Send one request, read its answer: status, reason, headers, body, keep the connection."""
    reader = connection.reader
    connection.writer.write(data)
    try:
        await _within(connection.writer.drain(), timeouts.get("write"), httpx.WriteTimeout)
    except OSError as error:
        raise httpx.WriteError(f"{type(error).__name__}: {error}") from error
    read = timeouts.get("read")
    try:
        while True:
            try:
                head = await _within(reader.readuntil(b"\r\n\r\n"), read, httpx.ReadTimeout)
            except asyncio.IncompleteReadError as error:
                if not error.partial:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                    ) from error
                raise httpx.RemoteProtocolError("Server disconnected mid-answer.") from error
            except asyncio.LimitOverrunError as error:
                raise httpx.RemoteProtocolError("Answer headers too long.") from error
            version, status, reason, headers = _parse_head(head)
            if not 100 <= status < 200:
                break
        fields = {name.lower(): value for name, value in headers}
        keep = version == b"HTTP/1.1" and b"close" not in fields.get(b"connection", b"").lower()
        if method == "HEAD" or status in NO_BODY:
            content = b""
        elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            content = await _chunked(reader, read)
        elif b"content-length" in fields:
            try:
                length = int(fields[b"content-length"])
            except ValueError as error:
                raise httpx.RemoteProtocolError("Malformed Content-Length.") from error
            content = await _within(reader.readexactly(length), read, httpx.ReadTimeout)
        else:
            content = await _within(reader.read(), read, httpx.ReadTimeout)
            keep = False
    except asyncio.IncompleteReadError as error:
        raise httpx.RemoteProtocolError("Server disconnected mid-answer.") from error
    except (ConnectionError, OSError) as error:
        raise httpx.ReadError(f"{type(error).__name__}: {error}") from error
    return status, reason, headers, content, keep


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    status_line, _, rest = head[:-4].partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"Malformed status line {status_line[:100]!r}.")
    headers = []
    for line in rest.split(b"\r\n") if rest else []:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"Malformed header line {line[:100]!r}.")
        headers.append((name, value.strip()))
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


async def _chunked(reader: asyncio.StreamReader, timeout: float | None) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = await _within(reader.readuntil(b"\r\n"), timeout, httpx.ReadTimeout)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as error:
            raise httpx.RemoteProtocolError("Malformed chunk size.") from error
        if size == 0:
            # Trailers, if any, up to the empty line.
            while await _within(reader.readuntil(b"\r\n"), timeout, httpx.ReadTimeout) != b"\r\n":
                pass
            return b"".join(chunks)
        chunk = await _within(reader.readexactly(size + 2), timeout, httpx.ReadTimeout)
        chunks.append(chunk[:-2])


async def _within(
    operation: Awaitable[T], timeout: float | None, error: type[httpx.TimeoutException]
) -> T:
    if timeout is None:
        return await operation
    try:
        async with asyncio.timeout(timeout):
            return await operation
    except TimeoutError as exc:
        raise error(f"no answer in {timeout:g} s") from exc


def default_transport(**options: Any) -> httpx.AsyncBaseTransport:
    """The transport Codat calls go through (wrapped in MeteredTransport by the app)."""
    return KeepAliveTransport(**options)

"""The Codat client's transport (aiohttp's, processor/codat/aiohttp_transport.py) against real
servers on loopback: the stand-in for Codat, and raw asyncio servers answering byte for byte what
a test needs (chunked, close-delimited, gzip, a dropped or silent connection, TLS)."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from processor.codat.aiohttp_transport import CodatTransport
from processor.codat.client import CodatClient, CodatError, new_client
from processor.sandbox import SandboxServer
from tests.support import API_KEY

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for item in lines:
        name, _, value = item.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return line, headers, body


async def with_server(
    handler: Handler, scenario: Callable[[str], Awaitable[Any]], **tls: Any
) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()  # also when the loop ends with the handler still waiting

    server = await asyncio.start_server(handle, "127.0.0.1", 0, **tls)
    port = server.sockets[0].getsockname()[1]
    try:
        return await scenario(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
    finally:
        server.close()


def test_codat_calls_through_it_reuse_one_connection_and_keep_their_meaning() -> None:
    """Against the stand-in: answers, errors and the Idempotency-Key as with httpx's own."""
    with SandboxServer(api_key=API_KEY) as sandbox:

        async def scenario() -> None:
            transport = CodatTransport()
            async with new_client(sandbox.url, API_KEY, transport=transport) as http:
                codat = CodatClient(http)
                company = await codat.create_company("Transport Ltd", idempotency_key="k-1")
                again = await codat.create_company("Transport Ltd", idempotency_key="k-1")
                assert again == company
                connection = await codat.create_connection(company["id"], "gbol")
                listed = await codat.list_connections(company["id"])
                assert [c["id"] for c in listed] == [connection["id"]]
                fetched = await codat.get_connection(company["id"], connection["id"])
                assert fetched["status"] == "PendingAuth"
                with pytest.raises(CodatError) as refused:
                    await codat.get_connection(company["id"], "00000000-0000-0000-0000-0000")
                assert refused.value.status == 404 and not refused.value.retryable
                assert codat.rate_limit.limit is not None
                found = await asyncio.gather(*(codat.get_company(company["id"]) for _ in range(3)))
                assert [f["id"] for f in found] == [company["id"]] * 3

        asyncio.run(scenario())
        posts = [r for r in sandbox.sandbox.requests if r["path"] == "/companies"]
        assert [p["idempotencyKey"] for p in posts] == ["k-1", "k-1"]


def test_chunked_close_delimited_and_gzip_answers_are_read_whole() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        b'5\r\n{"a":\r\n3;x=y\r\n 1}\r\n0\r\nTrailer: t\r\n\r\n',
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    ]
    packed = gzip.compress(b'{"zipped": true}')
    answers[1] = answers[1] % (len(packed), packed)
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while answers:
            try:
                line, _, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append(line)
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if answer.startswith(b"HTTP/1.0"):
                break
        writer.close()

    async def scenario(url: str) -> list[Any]:
        transport = CodatTransport()
        async with httpx.AsyncClient(base_url=url, transport=transport) as client:
            first = (await client.get("/one?x=1")).json()
            second = (await client.get("/two")).json()
            third = (await client.get("/three")).text
            return [first, second, third]

    found = asyncio.run(with_server(handler, scenario))
    assert found == [{"a": 1}, {"zipped": True}, "until the end"]
    assert seen == [b"GET /one?x=1 HTTP/1.1", b"GET /two HTTP/1.1", b"GET /three HTTP/1.1"]
    assert connections == 1  # the first two answers kept the connection open


def test_a_connection_the_server_closed_is_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()  # answered with keep-alive, then closed while idle

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, transport=CodatTransport()) as client:
            for _ in range(3):
                assert (await client.get("/")).status_code == 200
                await asyncio.sleep(0.05)

    asyncio.run(with_server(handler, scenario))
    assert connections == 3


def test_silence_dropped_connections_and_no_listener_raise_httpx_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _, _ = await read_request(reader)
        if line.startswith(b"GET /drop"):
            writer.close()
            return
        if line.startswith(b"GET /half"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
            await writer.drain()
            writer.close()
            return
        await asyncio.sleep(1)  # /silent: never in time

    async def scenario(url: str) -> None:
        transport = CodatTransport()
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/silent")
            with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected"):
                await client.get("/drop")
            with pytest.raises(httpx.RemoteProtocolError, match="not completed"):
                await client.get("/half")
        async with httpx.AsyncClient(transport=CodatTransport(), timeout=0.5) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://127.0.0.1:9/")

    asyncio.run(with_server(handler, scenario))


def test_the_codat_client_retries_what_the_transport_raises() -> None:
    """Timeouts and dropped connections are CodatErrors to retry, as with httpx's transport."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _, _ = await read_request(reader)
        if b"/drop" not in line:
            await asyncio.sleep(1)
        writer.close()

    async def scenario(url: str) -> None:
        transport = CodatTransport()
        async with new_client(url, API_KEY, timeout=0.2, transport=transport) as http:
            codat = CodatClient(http)
            for company in ("silent", "drop"):
                with pytest.raises(CodatError) as failed:
                    await codat.get_company(company)
                assert failed.value.retryable and failed.value.status is None

    asyncio.run(with_server(handler, scenario))


def test_https_with_the_ssl_context_it_is_given(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _, headers, body = await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        answer = json.dumps({"host": headers[b"host"].decode(), "body": body.decode()}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> None:
        trusted = ssl.create_default_context(cafile=str(cert))
        transport = CodatTransport(verify=trusted)
        async with httpx.AsyncClient(base_url=url, transport=transport) as client:
            answer = (await client.post("/x", json={"a": 1})).json()
        assert answer == {"host": url.removeprefix("https://"), "body": '{"a":1}'}
        # Not trusted by default: the certificate is refused.
        async with httpx.AsyncClient(base_url=url, transport=CodatTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/x")

    asyncio.run(with_server(handler, scenario, ssl=server_context))

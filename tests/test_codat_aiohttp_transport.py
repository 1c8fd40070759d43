"""The Codat client's transport (aiohttp's, `processor.codat.aiohttp_transport`) against the
stand-in for Codat as a real server: answers, a dropped connection and a slow answer each end as
the httpx outcome the client and the metrics tell apart."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from processor.codat.aiohttp_transport import CodatTransport
from processor.codat.calls import CallLog
from processor.codat.client import CodatClient, CodatError, new_client
from processor.codat.metered import MeteredTransport
from processor.metrics import Metrics
from tests.conftest import Codat
from tests.support import API_KEY


async def _call(codat: Codat, fn: Any, *, timeout: float = 5.0) -> tuple[Any, list[str]]:
    """What `fn(client)` gave (or raised), and the outcomes the metered transport noted."""
    calls = CallLog()
    transport = MeteredTransport(CodatTransport(), Metrics(), calls, quiet=True)
    async with new_client(codat.url, API_KEY, timeout=timeout, transport=transport) as http:
        try:
            result: Any = await fn(CodatClient(http))
        except CodatError as error:
            result = error
    return result, [call.status for call in calls.take()]


def test_answers_come_back_as_json(codat: Codat) -> None:
    company = codat.create_company("Transport Ltd")
    result, outcomes = asyncio.run(_call(codat, lambda c: c.get_company(company["id"])))
    assert result["name"] == "Transport Ltd"
    assert outcomes == ["200"]
    missing, outcomes = asyncio.run(_call(codat, lambda c: c.get_company("no-such-company")))
    assert isinstance(missing, CodatError) and missing.status == 404
    assert outcomes == ["404"]


def test_a_dropped_connection_is_a_connection_error_not_a_timeout(codat: Codat) -> None:
    """A POST (not idempotent: never sent again by the transport) whose connection is closed
    unanswered."""
    company = codat.create_company("Dropped Ltd")
    codat.faults([{"path": "/companies/*/connections", "method": "POST", "drop": True, "times": 1}])
    result, outcomes = asyncio.run(
        _call(codat, lambda c: c.create_connection(company["id"], "gbol"))
    )
    assert isinstance(result, CodatError) and result.retryable
    assert "cannot reach Codat (RemoteProtocolError" in str(result), result
    assert outcomes == ["connection_error"]


def test_a_get_dropped_twice_is_a_connection_error(codat: Codat) -> None:
    """aiohttp sends an idempotent request once more when the server closes the connection
    unanswered; a second drop is the caller's to see."""
    company = codat.create_company("Dropped Twice Ltd")
    codat.faults([{"path": "/companies/*", "method": "GET", "drop": True, "times": 2}])
    result, outcomes = asyncio.run(_call(codat, lambda c: c.get_company(company["id"])))
    assert isinstance(result, CodatError) and result.retryable, result
    assert outcomes == ["connection_error"]


def test_a_slow_answer_is_a_timeout(codat: Codat) -> None:
    company = codat.create_company("Slow Ltd")
    codat.faults([{"path": "/companies/*", "method": "GET", "delay": 1.5, "times": 1}])
    result, outcomes = asyncio.run(
        _call(codat, lambda c: c.get_company(company["id"]), timeout=0.5)
    )
    assert isinstance(result, CodatError) and result.retryable
    assert "no answer from Codat in time (ReadTimeout)" in str(result), result
    assert outcomes == ["timeout"]


def test_nothing_listening_is_a_connect_error() -> None:
    async def main() -> BaseException:
        transport = CodatTransport()
        try:
            async with httpx.AsyncClient(transport=transport) as http:
                await http.get("http://127.0.0.1:9/companies")
        except httpx.TransportError as error:
            return error
        raise AssertionError("a request to a closed port succeeded")

    error = asyncio.run(main())
    assert isinstance(error, httpx.ConnectError), repr(error)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_bodies_and_headers_go_through(codat: Codat, method: str) -> None:
    async def send(client: CodatClient) -> httpx.Response:
        path = "/companies" if method == "POST" else "/companies/none"
        return await client.http.request(
            method, path, json={"name": "Body Ltd"}, headers={"Idempotency-Key": "k-1"}
        )

    answer, _ = asyncio.run(_call(codat, send))
    assert isinstance(answer, httpx.Response)
    if method == "POST":
        assert answer.status_code == 200 and answer.json()["name"] == "Body Ltd"
    else:
        assert answer.status_code in (404, 405)

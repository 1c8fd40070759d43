"""Codat's daily quota as metrics: `MeteredTransport` sets two gauges from the
X-Rate-Limit-Limit and X-Rate-Limit-Remaining headers of each answer (CODAT.md: every response
has them), NaN until an answer says so, so that an alert on a low quota does not fire at
start-up. Codat's answers come from an httpx MockTransport: the edge, Codat's HTTP API."""

from __future__ import annotations

import asyncio
import math

import httpx

from processor.codat.metered import MeteredTransport
from processor.metrics import Metrics


def answers(*headers: dict[str, str]) -> httpx.MockTransport:
    left = list(headers)
    return httpx.MockTransport(lambda request: httpx.Response(200, json={}, headers=left.pop(0)))


def send(transport: MeteredTransport, times: int) -> None:
    async def calls() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://codat.test") as http:
            for _ in range(times):
                await http.get("/companies/c1/connections")

    asyncio.run(calls())


def test_the_quota_gauges_follow_the_latest_answer_that_says() -> None:
    metrics = Metrics()

    def quota() -> tuple[float | None, float | None]:
        sample = metrics.registry.get_sample_value
        return sample("codat_expenses_codat_quota_limit"), sample(
            "codat_expenses_codat_quota_remaining"
        )

    assert all(math.isnan(v or 0.0) for v in quota()), quota()
    transport = MeteredTransport(
        answers(
            {"X-Rate-Limit-Limit": "12000", "X-Rate-Limit-Remaining": "11990"},
            {"X-Rate-Limit-Limit": "12000", "X-Rate-Limit-Remaining": "11989"},
            {},  # an answer without them changes nothing
            {"X-Rate-Limit-Remaining": "soon"},  # nor one that is no count
        ),
        metrics,
        quiet=True,
    )
    send(transport, 2)
    assert quota() == (12000, 11989)
    send(transport, 2)
    assert quota() == (12000, 11989)

"""PostgreSQL lost under `serve` and back: nothing acknowledged is lost, everything resumes.

A server of the test's own (the shared one serves other tests) is stopped in the middle of a
stream of webhooks, as in a crash (`immediate`: no checkpoint), and started again. While it is
down, intake must not answer 2xx (it cannot commit) and `/healthz` must say 503 and why; once
it is back, the same `serve` process, never restarted, takes webhooks again, the sender's
retries fill the gaps, and every company reaches the state its events imply.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from processor.sandbox.sender import sign_headers
from tests.conftest import Codat
from tests.e2e.load_support import (
    Message,
    build_population,
    check_companies,
    check_log,
    load_seed,
    messages_from,
    wait_until_settled,
)
from tests.pg_server import PostgresServer, ServerUnavailable, running_server
from tests.support import API_KEY, ServeProcess, wait_for

COMPANIES = 60
RATE = 60.0
CONCURRENCY = 8
DOWN_SECONDS = 3.0


@pytest.fixture
def own_server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A server this test may stop (`postgres_server` first: it skips or fails as the others
    do when PostgreSQL is not installed)."""
    try:
        with running_server() as server:
            yield server
    except ServerUnavailable as missing:  # pragma: no cover - postgres_server said it exists
        pytest.fail(str(missing))


@pytest.fixture
def serve(
    tmp_path: Path, codat: Codat, secret: str, serve_port: int, own_server: PostgresServer
) -> Iterator[ServeProcess]:
    with own_server.fresh_database() as url:
        process = ServeProcess(
            tmp_path / "processor.db",
            {
                "CODAT_API_KEY": API_KEY,
                "CODAT_BASE_URL": codat.url,
                "CODAT_WEBHOOK_SECRET": secret,
                "RECONCILE_INTERVAL_SECONDS": "0",
                "DATABASE_BUSY_TIMEOUT_SECONDS": "1",
            },
            port=serve_port,
            database_url=url,
        )
        with process:
            yield process


class Sender:
    """One attempt per message while the server is away; the 2xx answers, counted."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self.acked: set[str] = set()
        self.statuses: Counter[str] = Counter()
        self.acked_while_down: list[str] = []
        self.down = False

    async def send(self, client: httpx.AsyncClient, message: Message) -> bool:
        headers = sign_headers(self.secret, message.message_id, message.body)
        down_before = self.down
        try:
            answer = await client.post(
                f"{self.url}/webhooks/codat", content=message.body, headers=headers
            )
        except httpx.HTTPError as error:
            self.statuses[type(error).__name__] += 1
            return False
        self.statuses[str(answer.status_code)] += 1
        if answer.is_success:
            self.acked.add(message.message_id)
            if down_before and self.down:
                self.acked_while_down.append(message.message_id)
        return answer.is_success


def test_postgresql_stopped_and_started_under_load_loses_nothing_acknowledged(
    codat: Codat, serve: ServeProcess, secret: str, own_server: PostgresServer
) -> None:
    rng: random.Random = load_seed("postgres restart")
    plans = build_population(codat, COMPANIES, rng, max_cycles=3)
    messages = messages_from(codat, plans)
    sender = Sender(serve.url, secret)
    health: list[tuple[int, str]] = []

    async def stream() -> None:
        started = time.monotonic()
        queue = iter(enumerate(messages))
        async with httpx.AsyncClient(timeout=10) as client:

            async def lane() -> None:
                for index, message in queue:
                    wait = started + index / RATE - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await sender.send(client, message)

            await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))

    async def outage() -> None:
        await asyncio.sleep(len(messages) / RATE / 3)
        await asyncio.to_thread(own_server.stop)
        sender.down = True  # from when the server is surely gone to when it may be back
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{serve.url}/healthz")
            health.append((answer.status_code, answer.text))
        await asyncio.sleep(DOWN_SECONDS)
        sender.down = False
        await asyncio.to_thread(own_server.start)

    async def both() -> None:
        await asyncio.gather(stream(), outage())

    asyncio.run(both())
    assert health and health[0][0] == 503, health
    assert "store" in health[0][1], health
    assert not sender.acked_while_down, f"2xx with the database down: {sender.acked_while_down}"
    refused = sum(n for status, n in sender.statuses.items() if status != "200")
    assert refused > 0, f"the outage refused nothing: {dict(sender.statuses)}"

    # Back: healthy again without a restart, and Svix's retries deliver what was refused.
    wait_for(serve._healthy, timeout=30, what=f"healthz 200 again: {serve.logs()[-2000:]}")

    async def redeliver() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for message in messages:
                if message.message_id not in sender.acked:
                    assert await sender.send(client, message), dict(sender.statuses)

    asyncio.run(redeliver())
    wait_until_settled(serve.database_url, plans, timeout=60, serve=serve)
    outcome = check_log(serve.database_url, messages, sender.acked)
    check_companies(serve, codat, plans, outcome)
    print(
        f"\npostgres restart: {len(messages)} messages, answers {dict(sender.statuses)}, "
        f"healthz while down {health[0][0]}; states {dict(outcome.states)}; partner "
        f"connections {outcome.partner_connections} for {outcome.ready} ready"
    )
    assert serve.process is not None and serve.process.poll() is None
    assert outcome.partner_connections == outcome.ready

"""Two `serve` instances on one PostgreSQL database, under load, SIGKILLed in turn.

About 150 companies live scripted lives in the stand-in for Codat; their webhook bodies are
delivered the way Svix delivers to an endpoint behind a router that spreads requests over the
instances: each attempt goes to either instance, and an attempt that gets no 2xx (the instance
is down, or answered 503) is sent again, to either instance, until one answers 2xx. Some
messages go to both instances at once (a retry racing a slow first attempt). Meanwhile a killer
SIGKILLs one instance or the other and restarts it. Afterwards: every acknowledged message is
stored exactly once, nothing is pending, every company is in the state its events imply, and
every ready company has exactly one partner expense connection, created by one POST.
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
    quiet_stand_in_errors,
    shuffle_nearby,
    wait_until_settled,
)
from tests.support import API_KEY, ServeProcess, free_port

COMPANIES = 150
MAX_CYCLES = 4
CONCURRENCY = 24
RATE = 90.0  # new messages a second: spreads the sending over the kills
BOTH_AT_ONCE = 0.1  # share of messages sent to both instances at the same time
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)
KILLS = 6
GIVE_UP_SECONDS = 90.0


@pytest.fixture
def instances(
    tmp_path: Path, codat: Codat, secret: str, postgres_url: str
) -> Iterator[list[ServeProcess]]:
    """Two `serve` processes on one database, each on its own port, without the sweep (it
    would correct from Codat what the events alone must bring about)."""
    env = {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": codat.url,
        "CODAT_WEBHOOK_SECRET": secret,
        "RECONCILE_INTERVAL_SECONDS": "0",
        "DATABASE_POOL_SIZE": "2",
    }
    running = [
        ServeProcess(tmp_path / f"{name}.db", env, free_port(), database_url=postgres_url)
        for name in ("a", "b")
    ]
    try:
        for instance in running:
            instance.start()
        yield running
    finally:
        for instance in running:
            instance.stop()


class Router:
    """What Svix and a router in front of the instances do, counted."""

    def __init__(self, instances: list[ServeProcess], secret: str, rng: random.Random) -> None:
        self.instances = instances
        self.secret = secret
        self.rng = rng
        self.acked: set[str] = set()
        self.undelivered: list[str] = []
        self.statuses: Counter[str] = Counter()
        self.both = 0

    async def deliver(self, client: httpx.AsyncClient, message: Message) -> None:
        deadline = time.monotonic() + GIVE_UP_SECONDS
        attempt = 0
        while time.monotonic() < deadline:
            if attempt == 0 and self.rng.random() < BOTH_AT_ONCE:
                self.both += 1
                answers = await asyncio.gather(
                    *(self._post(client, instance, message) for instance in self.instances)
                )
                delivered = any(answers)
            else:
                delivered = await self._post(client, self.rng.choice(self.instances), message)
            if delivered:
                self.acked.add(message.message_id)
                return
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1
        self.undelivered.append(message.message_id)

    async def _post(
        self, client: httpx.AsyncClient, instance: ServeProcess, message: Message
    ) -> bool:
        headers = sign_headers(self.secret, message.message_id, message.body)
        try:
            answer = await client.post(
                f"{instance.url}/webhooks/codat", content=message.body, headers=headers
            )
        except httpx.HTTPError as error:
            self.statuses[type(error).__name__] += 1
            return False
        self.statuses[str(answer.status_code)] += 1
        return answer.is_success


async def _under_fire(
    instances: list[ServeProcess], router: Router, messages: list[Message], rng: random.Random
) -> list[str]:
    """Deliver everything while SIGKILLing the instances in turn; returns who was killed."""
    killed: list[str] = []
    sending_done = asyncio.Event()
    first = rng.randrange(len(instances))

    async def killer() -> None:
        while len(killed) < KILLS:
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            if sending_done.is_set() and len(killed) >= KILLS // 2:
                return
            victim = instances[(first + len(killed)) % len(instances)]  # in turn
            await asyncio.to_thread(victim.kill)
            killed.append(victim.url)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await asyncio.to_thread(victim.start)

    async def send_all() -> None:
        queue = iter(enumerate(messages))
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as client:

            async def lane() -> None:
                for index, message in queue:
                    wait = started + index / RATE - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await router.deliver(client, message)

            await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        sending_done.set()

    await asyncio.gather(send_all(), killer())
    return killed


def test_two_instances_killed_in_turn_store_each_event_once_and_connect_each_company_once(
    codat: Codat, instances: list[ServeProcess], secret: str, postgres_url: str
) -> None:
    rng = load_seed("two instances")
    plans = build_population(codat, COMPANIES, rng, max_cycles=MAX_CYCLES)
    messages = shuffle_nearby(messages_from(codat, plans), rng, window=48)
    router = Router(instances, secret, rng)
    began = time.monotonic()
    with quiet_stand_in_errors():
        killed = asyncio.run(_under_fire(instances, router, messages, rng))
    sent = time.monotonic() - began
    logs = "\n".join(instance.logs()[-2000:] for instance in instances)
    assert not router.undelivered, f"{len(router.undelivered)} never got a 2xx; {logs}"
    assert len(router.acked) == len(messages)
    assert len(set(killed)) == 2, f"only one instance was killed: {killed}"

    settled = wait_until_settled(postgres_url, plans, timeout=60, serve=instances[0])
    outcome = check_log(postgres_url, messages, router.acked)
    check_companies(instances[1], codat, plans, outcome)
    print(
        f"\ntwo instances: {len(plans)} companies, {len(messages)} messages "
        f"({router.both} sent to both at once), answers {dict(router.statuses)}, "
        f"{len(killed)} SIGKILLs ({Counter(killed).most_common()}), send {sent:.1f} s, "
        f"settle {settled:.1f} s; {outcome.duplicate_rows} duplicate rows, "
        f"{outcome.redelivered} redelivered; states {dict(outcome.states)}; "
        f"partner connections {outcome.partner_connections} for {outcome.ready} ready; "
        f"creating POSTs {outcome.creating_posts}, replayed {outcome.replayed_posts}"
    )
    assert outcome.duplicate_rows == 0
    assert outcome.partner_connections == outcome.ready

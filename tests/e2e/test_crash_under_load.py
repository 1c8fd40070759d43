"""SIGKILL `serve` again and again while a Svix-like sender pushes ~2,000 webhooks at it.

About 200 companies live scripted lives in the stand-in for Codat (created, linked, unlinked or
deauthorized and relinked, failed attempts, never authorized, deleted); their ~2,000 webhook
bodies go to a real `serve` process through the Svix-like sender, 32 in flight, each message
resent under its own id until it gets a 2xx. Meanwhile a killer SIGKILLs `serve` at random
moments and restarts it on the same port and database. Afterwards nothing a 2xx acknowledged is
missing, nothing is stored twice, nothing is pending, every company is in the state its events
imply, and every ready company has exactly one partner expense connection in Codat.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Codat
from tests.e2e.load_support import (
    Message,
    SendStats,
    build_population,
    check_companies,
    check_log,
    load_seed,
    messages_from,
    send_until_delivered,
    shuffle_nearby,
    wait_until_settled,
)
from tests.support import API_KEY, ServeProcess

pytestmark = pytest.mark.serve_process  # the test SIGKILLs serve
COMPANIES = 200
MAX_CYCLES = 7  # disconnect-and-relink cycles per company, 0..MAX_CYCLES
CONCURRENCY = 32
RATE = 200.0  # new messages a second: spreads the sending over the kills
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1, 2, 3, 5)
MIN_KILLS = 5
MAX_KILLS = 8
KILLER_SECONDS = 45.0
SEND_GIVE_UP_SECONDS = 60.0


@pytest.fixture
def serve(tmp_path: Path, codat: Codat, secret: str, serve_port: int) -> Iterator[ServeProcess]:
    """A real `serve` process without the reconciliation sweep: each restart would otherwise
    sweep 1 s later and correct from Codat what the events alone must bring about."""
    process = ServeProcess(
        tmp_path / "processor.db",
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
            "RECONCILE_INTERVAL_SECONDS": "0",
        },
        port=serve_port,
    )
    with process:
        yield process


async def _under_fire(
    serve: ServeProcess, secret: str, messages: list[Message], rng: random.Random
) -> tuple[SendStats, list[float]]:
    """Send everything while killing `serve`; returns the sender's figures and restart times."""
    sending_done = asyncio.Event()
    restarts: list[float] = []

    async def killer() -> None:
        deadline = time.monotonic() + KILLER_SECONDS
        while len(restarts) < MAX_KILLS and time.monotonic() < deadline:
            if sending_done.is_set() and len(restarts) >= MIN_KILLS:
                return
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await asyncio.to_thread(serve.kill)
            began = time.monotonic()
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await asyncio.to_thread(serve.start)
            restarts.append(time.monotonic() - began)

    sending = asyncio.create_task(
        send_until_delivered(
            serve.url,
            secret,
            messages,
            concurrency=CONCURRENCY,
            rate=RATE,
            retry_delays=RETRY_DELAYS,
            give_up_after=SEND_GIVE_UP_SECONDS,
        )
    )
    killing = asyncio.create_task(killer())
    try:
        await asyncio.wait({sending, killing}, return_when=asyncio.FIRST_EXCEPTION)
        if killing.done() and killing.exception() is not None:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await killing  # raises the killer's failure
        stats = await sending
        sending_done.set()
        await killing
    finally:
        for task in (sending, killing):
            task.cancel()
        await asyncio.gather(sending, killing, return_exceptions=True)
    return stats, restarts


def test_sigkill_under_load_loses_no_acknowledged_event_and_duplicates_nothing(
    codat: Codat, serve: ServeProcess, secret: str
) -> None:
    rng = load_seed("crash under load")
    began = time.monotonic()
    plans = build_population(codat, COMPANIES, rng, max_cycles=MAX_CYCLES)
    messages = shuffle_nearby(messages_from(codat, plans), rng, window=64)
    built = time.monotonic() - began

    stats, restarts = asyncio.run(_under_fire(serve, secret, messages, rng))
    assert len(restarts) >= MIN_KILLS, f"only {len(restarts)} kills"
    assert not stats.undelivered, (
        f"{len(stats.undelivered)} messages never got a 2xx, e.g. {stats.undelivered[:3]}; "
        f"{serve.logs()[-3000:]}"
    )
    assert len(stats.acked) == len(messages)

    settled = wait_until_settled(serve.database_url, plans, timeout=45, serve=serve)
    outcome = check_log(serve.database_url, messages, stats.acked)
    check_companies(serve, codat, plans, outcome)
    tracebacks = serve.logs().count("Traceback")

    print(
        f"\ncrash under load: {len(plans)} companies, "
        f"{len(messages)} events sent ({stats.attempts} attempts, {stats.resends} resends), "
        f"{len(stats.acked)} message ids got a 2xx, {len(restarts)} SIGKILLs survived "
        f"(restarts took {min(restarts):.2f}-{max(restarts):.2f} s), "
        f"{outcome.duplicate_rows} duplicates found in the log, "
        f"{outcome.redelivered} events redelivered and absorbed"
    )
    print(
        f"  build {built:.1f} s, send {stats.seconds:.1f} s, settle {settled:.1f} s; "
        f"log rows {outcome.log_rows} ({outcome.webhook_rows} webhooks); states "
        f"{dict(outcome.states)}; partner connections {outcome.partner_connections} "
        f"for {outcome.ready} ready companies; creating POSTs {outcome.creating_posts}, "
        f"replayed POSTs {outcome.replayed_posts}; tracebacks in serve's log {tracebacks}"
    )
    assert outcome.duplicate_rows == 0
    assert outcome.partner_connections >= outcome.ready

"""Codat misbehaves for stretches of time while webhooks keep arriving for ~100 companies.

The stand-in answers every API call with 500s, then 503s, then 429s with `Retry-After`, then
slow answers past the client timeout (serve runs with CODAT_TIMEOUT_SECONDS=2), then dropped
connections, each stretch for a second or two (`forSeconds`); the last one lasts until every
webhook has been answered. Webhooks keep coming throughout, and intake must answer each one 2xx
without waiting for Codat: a webhook that waited for Codat to recover would wait for ever (the
faults clear only once every webhook is answered) and time out; and in every stretch, webhooks
are sent and answered while its fault is active, sooner than one call to Codat could take. Each
stretch's fault really met the worker: the stand-in recorded calls answered with it. Once the
faults clear, every company reaches the state its events imply with at most one partner expense
connection (exactly one if ready), nothing pending and nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Codat
from tests.e2e.load_support import (
    Answer,
    Message,
    SendStats,
    build_population,
    check_companies,
    check_log,
    latency_line,
    load_seed,
    messages_from,
    quiet_stand_in_errors,
    send_once_timed,
    wait_until_settled,
)
from tests.support import Serve

pytestmark = pytest.mark.backends("sqlite", "postgres")

COMPANIES = 100
MAX_CYCLES = 2
EVERY_API_PATH = "/companies*"
CODAT_TIMEOUT = 2.0  # serve's CODAT_TIMEOUT_SECONDS (tests/support.py)
STRETCHES: tuple[tuple[str, dict[str, Any], float], ...] = (
    ("500", {"status": 500}, 1.5),
    ("503", {"status": 503}, 1.5),
    ("429", {"status": 429, "retryAfter": "1"}, 2.0),
    ("slow", {"delay": CODAT_TIMEOUT + 0.5}, CODAT_TIMEOUT + 1.0),
    ("drop", {"drop": True}, 1.5),
)
FAULT_SECONDS = sum(seconds for _, _, seconds in STRETCHES)
SENDING_SECONDS = FAULT_SECONDS - STRETCHES[-1][2] / 2  # the last webhooks meet the last stretch
# No answer may take as long as all the faults together: one that did was waiting for Codat.
# The last stretch lasts until every webhook is answered, so such a sender would time out.
SENDER_TIMEOUT = FAULT_SECONDS


@dataclass(frozen=True)
class Stretch:
    """When (time.monotonic) a stretch of faults was surely active in the stand-in."""

    name: str
    active_from: float  # its rule was installed by then
    active_until: float  # its rule had not expired (or been cleared) before then

    def holds(self, answer: Answer) -> bool:
        """The answer came while this stretch was active, quicker than one Codat call can be
        (serve's Codat timeout): intake did not wait for a call to Codat to answer it."""
        took = answer.answered - answer.sent
        inside = self.active_from <= answer.sent and answer.answered <= self.active_until
        return inside and took < CODAT_TIMEOUT


def fault_kind(rule: dict[str, Any] | None) -> str | None:
    if rule is None:
        return None
    if rule.get("drop"):
        return "drop"
    if rule.get("delay"):
        return "slow"
    return str(rule.get("status"))


def met(request: dict[str, Any], kind: str) -> bool:
    """The stand-in answered this request with the fault of stretch `kind`."""
    if fault_kind(request["fault"]) != kind:
        return False
    if kind == "drop":
        return request["status"] is None  # closed without an answer
    if kind == "slow":
        return True  # held past serve's timeout: the answer, if any, went nowhere
    return bool(request["status"] == int(kind))


async def _during_faults(
    codat: Codat, serve: Serve, secret: str, before: list[Message], during: list[Message]
) -> tuple[SendStats, SendStats, list[Stretch]]:
    """Send the companies' first events, then the rest while the stretches of faults run."""
    first = await send_once_timed(
        serve.url, secret, before, concurrency=8, rate=400.0, timeout=SENDER_TIMEOUT
    )
    sending_done = asyncio.Event()

    async def faults() -> list[Stretch]:
        """Each stretch on a fixed schedule from the start, so that delays do not add up."""
        start = time.monotonic()
        stretches = []
        boundaries = list(itertools.accumulate(seconds for _, _, seconds in STRETCHES))
        for index, (name, rule, _) in enumerate(STRETCHES):
            last = index == len(STRETCHES) - 1
            began = time.monotonic()
            lasting = 10 * FAULT_SECONDS if last else start + boundaries[index] - began
            await asyncio.to_thread(
                codat.faults,
                [{"method": "*", "path": EVERY_API_PATH, **rule, "forSeconds": lasting}],
            )
            installed = time.monotonic()
            await asyncio.sleep(max(0.0, start + boundaries[index] - installed))
            if last:
                await sending_done.wait()
            stretches.append(Stretch(name, installed, min(time.monotonic(), began + lasting)))
        await asyncio.to_thread(codat.admin, "DELETE", "/faults")
        return stretches

    faulting = asyncio.create_task(faults())
    try:
        second = await send_once_timed(
            serve.url,
            secret,
            during,
            concurrency=8,
            rate=len(during) / SENDING_SECONDS,
            timeout=SENDER_TIMEOUT,
        )
        sending_done.set()
        stretches = await faulting
    finally:
        faulting.cancel()
        await asyncio.gather(faulting, return_exceptions=True)
    return first, second, stretches


def test_intake_stays_fast_and_onboarding_recovers_while_codat_fails_for_stretches(
    codat: Codat, serve: Serve, secret: str
) -> None:
    rng = load_seed("Codat faults")
    plans = build_population(codat, COMPANIES, rng, max_cycles=MAX_CYCLES)
    messages = messages_from(codat, plans)
    # company.created and connection.created of every company first, then the rest in the order
    # Codat generated them: the first connection.connected arrives as the faults begin.
    split = 2 * len(plans)
    before, during = messages[:split], messages[split:]
    assert {m.event_type for m in before} == {"company.created", "connection.created"}

    with quiet_stand_in_errors():
        first, second, stretches = asyncio.run(_during_faults(codat, serve, secret, before, during))
    answers = first.answers + second.answers
    statuses = first.statuses + second.statuses
    acked = first.acked | second.acked
    # Answered while each stretch was active, sooner than a call to Codat could have taken.
    inside = {s.name: [a for a in second.answers if s.holds(a)] for s in stretches}

    settled = wait_until_settled(serve.database_url, plans, timeout=30, serve=serve)
    outcome = check_log(serve.database_url, messages, acked)
    check_companies(serve, codat, plans, outcome)
    requests = codat.state()["requests"]
    hits = Counter(fault_kind(r["fault"]) for r in requests if r["fault"] is not None)
    answered_with = {name: sum(met(r, name) for r in requests) for name, _, _ in STRETCHES}

    print(
        f"\nCodat faults: {len(plans)} companies, {len(messages)} webhooks ({len(during)} "
        f"during {stretches[-1].active_until - stretches[0].active_from:.1f} s of faults), answers "
        f"{dict(statuses)}; answered inside each stretch "
        f"{ {name: len(found) for name, found in inside.items()} }"
    )
    print(f"  {latency_line([a.answered - a.sent for a in answers])}")
    print(
        f"  faulted Codat calls {dict(hits)} of {len(requests)} in all, answered with their "
        f"fault {answered_with}; settled {settled:.1f} s after the faults cleared; states "
        f"{dict(outcome.states)}; partner connections {outcome.partner_connections} for "
        f"{outcome.ready} ready companies; creating POSTs {outcome.creating_posts}, replayed "
        f"{outcome.replayed_posts}"
    )
    assert statuses == Counter({"200": len(messages)}), statuses
    assert len(acked) == len(messages)
    # Intake never waited for Codat: the faults cleared only once every webhook had been
    # answered, so one that waited for Codat would have timed out instead of getting its 200;
    # and in every stretch, webhooks were answered while that stretch's fault was active, each
    # sooner than serve's Codat timeout (one slow call to Codat would have taken that long).
    idle = [name for name, found in inside.items() if not found]
    assert not idle, f"no webhook was sent and answered inside the {idle} stretch(es)"
    # Each kind of fault was met by the worker, so the recovery above covered all of them.
    missing = [name for name, count in answered_with.items() if count == 0]
    assert not missing, f"no Codat call met the {missing} stretch(es): {dict(hits)}"

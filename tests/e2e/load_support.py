"""Support for the load, fault and crash tests: a scripted population of companies in the
stand-in for Codat, paced webhook senders, and the checks of the end state.

The population is built through the stand-in's own API with its automatic webhooks switched off;
the webhook bodies it generated are then taken from `/_sandbox/state` and sent by the test, so
the test decides the pace, the concurrency and the retries, and knows every message id it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from processor.sandbox.sender import WebhookSender, new_message_id, sign_headers
from processor.sandbox.webhook_bodies import encode
from store import Store, open_store
from tests.conftest import Codat
from tests.support import TOKEN, Serve, partner_connections

PARTNER_PATH = "/companies/{}/sync/expenses/connections/partnerExpense"
PLATFORM_KEYS = ("gbol", "qhyg", "fbrh", "akxx", "trji")

SEED_VARIABLE = "LOAD_SEED"


def load_seed(test: str) -> random.Random:
    """The random generator of a randomized load test, seeded from LOAD_SEED if it is set.

    The seed is printed before the test starts, so that the output pytest shows with a failure
    (or `-s`) says how to rerun exactly the same population and schedule.
    """
    given = os.environ.get(SEED_VARIABLE, "").strip()
    if given and not given.isdigit():
        raise ValueError(f"{SEED_VARIABLE} must be a non-negative integer, got {given!r}")
    seed = int(given) if given else random.randrange(1 << 30)
    origin = f"from {SEED_VARIABLE}" if given else "random"
    print(f"\n{test}: seed {seed} ({origin}; rerun with {SEED_VARIABLE}={seed})", flush=True)
    return random.Random(seed)


# Final states of a scripted company, and the accounting status each one implies.
PENDING_AUTH = "pending_auth"
READY = "ready"
DISCONNECTED = "disconnected"
DELETED = "deleted"


@dataclass
class CompanyPlan:
    """One company's scripted life in the stand-in, and the state its events imply."""

    company_id: str
    name: str
    connection_id: str = ""
    actions: list[str] = field(default_factory=list)
    expected: str = PENDING_AUTH

    @property
    def ever_linked(self) -> bool:
        return "authorize" in self.actions


@dataclass
class Message:
    """One webhook message: the id it is sent under and its raw body."""

    message_id: str
    body: bytes
    event_type: str


def script(rng: random.Random, *, max_cycles: int) -> tuple[list[str], str]:
    """A random life for one company after its accounting connection is created."""
    roll = rng.random()
    fails = ["fail"] * rng.choice((0, 0, 0, 1, 2))
    if roll < 0.10:
        return fails, PENDING_AUTH
    actions = [*fails, "authorize"]
    for _ in range(rng.randint(0, max_cycles)):
        actions += [rng.choice(("unlink", "deauthorize")), "authorize"]
    if roll < 0.14:
        return [*actions, "delete"], DELETED
    if roll < 0.30:
        return [*actions, rng.choice(("unlink", "deauthorize"))], DISCONNECTED
    return actions, READY


def build_population(
    codat: Codat, count: int, rng: random.Random, *, max_cycles: int
) -> list[CompanyPlan]:
    """Create `count` companies in the stand-in and play their scripts, round by round.

    Acting on every company in turn puts a whole round between two actions on one company, so
    each of its events has a later `generatedDate` than the one before.
    """
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    plans = []
    for index in range(count):
        company = codat.create_company(f"Load Company {index:04d}")
        plans.append(CompanyPlan(company["id"], company["name"]))
    for index, plan in enumerate(plans):
        key = PLATFORM_KEYS[index % len(PLATFORM_KEYS)]
        plan.connection_id = codat.create_connection(plan.company_id, key)["id"]
        plan.actions, plan.expected = script(rng, max_cycles=max_cycles)
    rounds = max(len(plan.actions) for plan in plans)
    for step in range(rounds):
        for plan in plans:
            if step < len(plan.actions):
                act(codat, plan, plan.actions[step])
    return plans


def act(codat: Codat, plan: CompanyPlan, action: str) -> None:
    company, connection = plan.company_id, plan.connection_id
    target = f"/companies/{company}/connections/{connection}"
    if action == "authorize":
        codat.authorize(company, connection)
    elif action == "fail":
        codat.admin("POST", f"{target}/fail", json={"errorMessage": "The user went away."})
    elif action == "deauthorize":
        codat.admin("POST", f"{target}/deauthorize")
    elif action == "unlink":
        answer = codat.http.patch(target, json={"status": "Unlinked"})
        assert answer.status_code == 200, answer.text
    elif action == "delete":
        answer = codat.http.delete(f"/_sandbox/companies/{company}")
        assert answer.status_code == 204, answer.text
    else:
        raise ValueError(f"unknown action {action!r}")


def messages_from(codat: Codat, plans: Sequence[CompanyPlan]) -> list[Message]:
    """The webhook bodies the stand-in generated, in order, each under a fresh message id."""
    events = codat.state()["events"]
    expected = sum(2 + len(plan.actions) for plan in plans)
    assert len(events) == expected, f"the stand-in generated {len(events)}, not {expected}"
    return [Message(new_message_id(), encode(body), body["eventType"]) for body in events]


def shuffle_nearby(items: list[Message], rng: random.Random, window: int) -> list[Message]:
    """Shuffle within consecutive windows: roughly in order, as a busy sender delivers."""
    result: list[Message] = []
    for start in range(0, len(items), window):
        chunk = items[start : start + window]
        rng.shuffle(chunk)
        result += chunk
    return result


@contextlib.contextmanager
def quiet_stand_in_errors() -> Iterator[None]:
    """Silence uvicorn's ERROR lines for what the stand-in does on purpose: connections it
    drops, and held requests whose client (a killed `serve`) went away."""
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- Sending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One webhook sent once: when (time.monotonic) it was sent and answered, and the answer."""

    message_id: str
    event_type: str
    sent: float
    answered: float
    status: str


@dataclass
class SendStats:
    """What the sender saw."""

    acked: set[str] = field(default_factory=set)
    undelivered: list[str] = field(default_factory=list)
    attempts: int = 0
    resends: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    slow: list[tuple[str, float]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    seconds: float = 0.0


async def paced(
    messages: Sequence[Message],
    send: Callable[[Message], Awaitable[None]],
    *,
    concurrency: int,
    rate: float,
) -> float:
    """Call `send` for each message, at most `concurrency` at once and `rate` starts a second."""
    started = time.monotonic()
    cursor = iter(enumerate(messages))

    async def lane() -> None:
        for index, message in cursor:
            wait = started + index / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await send(message)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.monotonic() - started


async def send_until_delivered(
    url: str,
    secret: str,
    messages: Sequence[Message],
    *,
    concurrency: int,
    rate: float,
    retry_delays: Sequence[float],
    give_up_after: float,
) -> SendStats:
    """Deliver every message the way Svix does, resending until a 2xx or `give_up_after` s."""
    stats = SendStats()
    deadline = time.monotonic() + give_up_after
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    ) as client:
        sender = WebhookSender(
            f"{url}/webhooks/codat", secret, client=client, retry_delays=retry_delays, timeout=5
        )

        async def send(message: Message) -> None:
            rounds = 0
            while time.monotonic() < deadline and rounds < 20:
                rounds += 1
                delivery = await sender.send(message.body, message_id=message.message_id)
                stats.attempts += delivery.attempts
                stats.statuses[str(delivery.status)] += 1
                if delivery.delivered:
                    stats.acked.add(message.message_id)
                    stats.resends += delivery.attempts - 1 + (rounds - 1) * (1 + len(retry_delays))
                    return
            stats.undelivered.append(message.message_id)

        stats.seconds = await paced(messages, send, concurrency=concurrency, rate=rate)
        await sender.aclose()
    return stats


async def send_once_timed(
    url: str,
    secret: str,
    messages: Sequence[Message],
    *,
    concurrency: int,
    rate: float,
    timeout: float,
) -> SendStats:
    """One attempt per message, timing each answer (or the lack of one)."""
    stats = SendStats()
    async with httpx.AsyncClient(timeout=timeout) as client:

        async def send(message: Message) -> None:
            headers = sign_headers(secret, message.message_id, message.body)
            began = time.monotonic()
            try:
                answer = await client.post(
                    f"{url}/webhooks/codat", content=message.body, headers=headers
                )
                status = str(answer.status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            answered = time.monotonic()
            took = answered - began
            stats.answers.append(
                Answer(message.message_id, message.event_type, began, answered, status)
            )
            stats.attempts += 1
            stats.latencies.append(took)
            stats.statuses[status] += 1
            if status.startswith("2"):
                stats.acked.add(message.message_id)
            else:
                stats.undelivered.append(message.message_id)
            if took >= timeout / 2:
                stats.slow.append((message.event_type, took))

        stats.seconds = await paced(messages, send, concurrency=concurrency, rate=rate)
    return stats


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of `values` (share in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_line(latencies: Sequence[float]) -> str:
    return (
        f"intake latency over {len(latencies)} answers: "
        f"p50 {percentile(latencies, 0.50) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms"
    )


# --- The end state --------------------------------------------------------------------------


def pending_effects(store: Store) -> int:
    return sum(len(store.open_effects(company_id)) for company_id in store.company_ids())


def mismatched(store: Store, plans: Sequence[CompanyPlan]) -> list[tuple[str, str, str | None]]:
    """(company id, expected state, stored state) of every company not where it should be."""
    wrong = []
    for plan in plans:
        row = store.company(plan.company_id)
        state = row.state if row is not None else None
        if state != plan.expected:
            wrong.append((plan.company_id, plan.expected, state))
    return wrong


def wait_until_settled(
    database_url: str, plans: Sequence[CompanyPlan], *, timeout: float, serve: Serve
) -> float:
    """Poll the store (read-only) until nothing is pending and every company is where its
    events say; twice in a row, half a second apart. Returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    store = open_store(database_url, readonly=True)
    try:
        calm = 0
        while True:
            events = store.count_events(pending=True)
            effects = pending_effects(store)
            wrong = mismatched(store, plans)
            calm = calm + 1 if not (events or effects or wrong) else 0
            if calm >= 2:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                examples = [serve.company(company_id) for company_id, _, _ in wrong[:2]]
                raise AssertionError(
                    f"not settled after {timeout} s: {events} event(s) and {effects} effect(s) "
                    f"pending; {len(wrong)} companies not in their expected state, e.g. "
                    f"{wrong[:5]}; documents: {examples}"
                )
            time.sleep(0.5 if calm else 0.2)
    finally:
        store.close()


@dataclass
class Outcome:
    """Figures of the end state, for the tests to print."""

    log_rows: int = 0
    webhook_rows: int = 0
    duplicate_rows: int = 0
    redelivered: int = 0
    ready: int = 0
    partner_connections: int = 0
    creating_posts: int = 0
    replayed_posts: int = 0
    states: Counter[str] = field(default_factory=Counter)


def check_log(database_url: str, sent: Sequence[Message], acked: set[str]) -> Outcome:
    """Every acknowledged message is in the log exactly once; nothing is pending or failed."""
    outcome = Outcome()
    store = open_store(database_url, readonly=True)
    try:
        rows = store.find_events()
        outcome.log_rows = len(rows)
        webhook = [row for row in rows if row.source == "webhook"]
        outcome.webhook_rows = len(webhook)
        by_message = Counter(row.message_id for row in rows)
        repeated = {mid: n for mid, n in by_message.items() if n > 1}
        outcome.duplicate_rows = sum(n - 1 for n in repeated.values())
        missing = [mid for mid in acked if by_message[mid] == 0]
        assert not missing, f"{len(missing)} acknowledged message(s) lost, e.g. {missing[:5]}"
        assert not repeated, f"message ids stored more than once: {list(repeated.items())[:5]}"
        for message_id in sorted(acked)[:50]:  # the same through the query the CLI uses
            found = store.find_events(event_or_message_id=message_id)
            assert [row.message_id for row in found] == [message_id]
        sent_ids = {message.message_id for message in sent}
        unexpected = [row.message_id for row in webhook if row.message_id not in sent_ids]
        assert not unexpected, f"webhook rows nobody sent: {unexpected[:5]}"
        assert len(webhook) == len(sent_ids), (len(webhook), len(sent_ids))
        # Each body went out under one message id: no event id may be stored twice either.
        by_event = Counter(row.event_id for row in webhook)
        twice = [eid for eid, n in by_event.items() if n > 1]
        assert not twice, f"event ids stored twice: {twice[:5]}"
        assert not [row for row in webhook if row.duplicate_of is not None]
        outcome.redelivered = sum(1 for row in webhook if row.deliveries > 1)
        assert store.count_events(pending=True) == 0
        assert pending_effects(store) == 0
        failed = store.failed_effects()
        assert not failed, f"dead-lettered effects: {failed[:3]}"
    finally:
        store.close()
    return outcome


def creating_posts(sandbox_state: dict[str, Any], company_id: str) -> list[dict[str, Any]]:
    """The partner expense connection POSTs the stand-in received for one company."""
    path = PARTNER_PATH.format(company_id)
    return [r for r in sandbox_state["requests"] if r["method"] == "POST" and r["path"] == path]


def check_posts(sandbox_state: dict[str, Any], company_id: str) -> tuple[int, int]:
    """At most one POST may have created a connection (answered 2xx, or still unanswered, not
    from the idempotency cache); any other succeeded only as a replay of the same key's answer.
    Returns (creating POSTs, replayed POSTs)."""
    posts = creating_posts(sandbox_state, company_id)
    creating = [
        r for r in posts if not r["replayed"] and (r["status"] is None or 200 <= r["status"] < 300)
    ]
    replayed = [r for r in posts if r["replayed"]]
    assert len(creating) <= 1, f"{len(creating)} creating POSTs for {company_id}: {posts}"
    keys = {r["idempotencyKey"] for r in creating + replayed}
    assert len(keys) <= 1, f"successful POSTs under different keys for {company_id}: {posts}"
    return len(creating), len(replayed)


def check_companies(
    serve: Serve, codat: Codat, plans: Sequence[CompanyPlan], outcome: Outcome
) -> None:
    """Every company is where its events say, with one partner connection if it is ready."""
    sandbox = codat.state()
    problems: list[tuple[Any, ...]] = []
    with httpx.Client(timeout=10) as client:
        for plan in plans:
            answer = client.get(
                f"{serve.url}/companies/{plan.company_id}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert answer.status_code == 200, answer.text
            document = answer.json()
            outcome.states[document["state"]] += 1
            partners = partner_connections(sandbox, plan.company_id)
            outcome.partner_connections += len(partners)
            created, replayed = check_posts(sandbox, plan.company_id)
            outcome.creating_posts += created
            outcome.replayed_posts += replayed
            if document["state"] != plan.expected or document["pending"]:
                problems.append((plan.company_id, plan.expected, document["state"], "state"))
            if len(partners) > 1:
                problems.append((plan.company_id, plan.expected, len(partners), "partners"))
            if plan.expected == READY:
                outcome.ready += 1
                expense = document["expenseConnection"] or {}
                if len(partners) != 1 or expense.get("id") != partners[0]["id"]:
                    problems.append((plan.company_id, expense, partners, "partner"))
                if document["accountingConnection"]["status"] != "Linked":
                    problems.append((plan.company_id, document["accountingConnection"], "", "acc"))
            elif not plan.ever_linked and partners:
                problems.append((plan.company_id, plan.expected, partners, "never linked"))
            elif plan.expected == DISCONNECTED:
                status = document["accountingConnection"]["status"]
                if status not in ("Unlinked", "Deauthorized"):
                    problems.append((plan.company_id, plan.expected, status, "acc"))
    assert not problems, f"{len(problems)} companies wrong, e.g. {problems[:5]}"

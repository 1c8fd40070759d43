"""The worker (`processor.work.worker.Worker`) in-process: a real writer and store on a SQLite
file in tmp_path, the stand-in for Codat on a real loopback URL, and the stand-in's own webhook
bodies fed to the log the way the intake maps them. No HTTP intake, no uvicorn for the processor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from processor import clock, config
from processor.codat.client import CodatClient, new_client
from processor.http.documents import company_document
from processor.intake.bodies import webhook_event
from processor.intake.writer import Writer
from processor.sandbox.sender import new_message_id
from processor.sandbox.webhook_bodies import encode
from processor.work.effects import claim_seconds
from processor.work.folding import fold_companies
from processor.work.worker import Worker
from store import Store
from tests.conftest import Codat
from tests.support import API_KEY, open_db, partner_connections

T = TypeVar("T")
PARTNER_PATH = "/companies/{}/sync/expenses/connections/partnerExpense"


class Harness:
    """A worker with its writer, its read connection and a Codat client; fed by `feed`."""

    def __init__(self, database: Path, codat: Codat, **env: str) -> None:
        self.codat = codat
        self.settings = config.load(
            {
                "DATABASE_URL": f"sqlite:///{database}",
                "CODAT_API_KEY": API_KEY,
                "CODAT_BASE_URL": codat.url,
                "RETRY_INITIAL_SECONDS": "0.2",
                "RETRY_MAX_SECONDS": "0.4",
                "CODAT_TIMEOUT_SECONDS": "2",
                **env,
            },
            require=(),
        )
        self.writer = Writer(self.settings.database_url)
        self.writer.start()
        self.worker_reads = open_db(database, readonly=True)
        self.reads = open_db(database, readonly=True)
        self.http = new_client(self.settings.base_url, API_KEY, timeout=self.settings.codat_timeout)
        self.worker = Worker(self.writer, self.worker_reads, CodatClient(self.http), self.settings)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.worker.drain()
        await self.http.aclose()
        self.worker_reads.close()
        self.reads.close()
        await self.writer.stop()

    async def feed(self, bodies: list[dict[str, Any]]) -> None:
        """Append webhook bodies as the intake would (each under a fresh message id)."""
        for body in bodies:
            event = webhook_event(
                body,
                body=encode(body),
                message_id=new_message_id(),
                timestamp=int(time.time()),
                headers={},
                received_at=clock.now(),
            )
            await self.writer.append(event)
        self.worker.wake()

    def document(self, company_id: str) -> dict[str, Any]:
        document = company_document(self.reads, company_id)
        assert document is not None, f"no company {company_id} in the store"
        return document

    async def until(self, predicate: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
        """Poll until `predicate()` is truthy: its value."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.01)
        return value

    async def settled(self, company_id: str, state: str) -> dict[str, Any]:
        """The document once the company is in `state` with nothing pending."""

        def reached() -> dict[str, Any] | None:
            document = company_document(self.reads, company_id)
            if (
                document
                and document["state"] == state
                and not document["pending"]
                and document["pendingEvents"] == 0
            ):
                return document
            return None

        return await self.until(reached, f"company {company_id} {state}, nothing pending")


@contextlib.asynccontextmanager
async def harness(database: Path, codat: Codat, **env: str) -> AsyncIterator[Harness]:
    running = Harness(database, codat, **env)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "processor.db"


@pytest.fixture
def quiet_codat(codat: Codat) -> Codat:
    """The stand-in, its webhooks recorded but not sent: the test feeds them itself."""
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    return codat


def bodies_for(codat: Codat, company_id: str) -> list[dict[str, Any]]:
    """The webhook bodies the stand-in generated for a company, in order."""
    found = []
    for body in codat.state()["events"]:
        payload = body.get("payload", {})
        owner = payload.get("referenceCompany", {}).get("id") or payload.get("id")
        if owner == company_id:
            found.append(body)
    return found


def linked_in_codat(codat: Codat, name: str) -> tuple[str, str, list[dict[str, Any]]]:
    """A company whose accounting connection the customer authorized; its three webhooks."""
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"])
    codat.authorize(company["id"], connection["id"])
    bodies = bodies_for(codat, company["id"])
    types = [body["eventType"] for body in bodies]
    assert types == ["company.created", "connection.created", "connection.connected"], types
    return company["id"], connection["id"], bodies


def requests(codat: Codat, company_id: str, since: int) -> list[tuple[str, str]]:
    """(method, path) of the Codat API requests about the company after the first `since`."""
    return [
        (r["method"], r["path"].replace(company_id, "C"))
        for r in codat.state()["requests"][since:]
        if f"/companies/{company_id}" in r["path"]
    ]


def posts(codat: Codat, company_id: str) -> list[dict[str, Any]]:
    path = PARTNER_PATH.format(company_id)
    return [r for r in codat.state()["requests"] if r["method"] == "POST" and r["path"] == path]


def test_a_linked_company_gets_exactly_one_partner_connection(
    database: Path, quiet_codat: Codat
) -> None:
    codat = quiet_codat
    company_id, connection_id, bodies = linked_in_codat(codat, "Worker One Ltd")
    since = len(codat.state()["requests"])

    async def scenario() -> None:
        async with harness(database, codat) as run:
            run.start()
            await run.feed(bodies)
            document = await run.settled(company_id, "ready")
            [partner] = partner_connections(codat.state(), company_id)
            assert document["expenseConnection"] == {"id": partner["id"], "status": "Linked"}
            # Look before you create: the accounting connection and the list (asked at once,
            # in either order), then the POST.
            made = requests(codat, company_id, since)
            assert sorted(made[:2]) == [
                ("GET", "/companies/C/connections"),
                ("GET", f"/companies/C/connections/{connection_id}"),
            ]
            assert made[2:] == [("POST", "/companies/C/sync/expenses/connections/partnerExpense")]
            [effect] = run.reads.company_effects(company_id)
            assert (effect.status, effect.attempts) == ("done", 1)
            assert (effect.result or {})["note"] == "created"
            assert posts(codat, company_id)[0]["idempotencyKey"] == effect.idempotency_key

            # Codat's webhook about the new connection, and the connected webhook once more
            # (a resend under a new message id), ask for nothing more.
            announced = bodies_for(codat, company_id)[3:]
            assert [body["eventType"] for body in announced] == ["connection.created"]
            await run.feed([*announced, bodies[2]])
            document = await run.settled(company_id, "ready")
            for _ in range(3):
                await run.worker.step()
            assert run.reads.due_effects(clock.after(3600)) == []
            assert len(posts(codat, company_id)) == 1
            assert len(partner_connections(codat.state(), company_id)) == 1
            outcomes = {e["eventType"]: e["outcome"] for e in document["events"]}
            assert outcomes["partnerExpenseConnection.created"] == "applied"

    asyncio.run(scenario())


def test_a_partner_connection_codat_already_has_is_adopted_not_created(
    database: Path, quiet_codat: Codat
) -> None:
    codat = quiet_codat
    company_id, _, bodies = linked_in_codat(codat, "Already Has One Ltd")
    made = codat.http.post(PARTNER_PATH.format(company_id), headers={"Idempotency-Key": "earlier"})
    assert made.status_code == 200, made.text

    async def scenario() -> None:
        async with harness(database, codat) as run:
            run.start()
            await run.feed(bodies)
            document = await run.settled(company_id, "ready")
            assert document["expenseConnection"]["id"] == made.json()["id"]
            assert [p["idempotencyKey"] for p in posts(codat, company_id)] == ["earlier"]
            [effect] = run.reads.company_effects(company_id)
            assert (effect.result or {})["note"] == "adopted"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("change", "note", "listing_fault"),
    [
        ("deauthorize", "accounting connection is Deauthorized, not Linked", None),
        ("deauthorize", "accounting connection is Deauthorized, not Linked", 503),
        ("delete", "accounting connection gone", 503),
    ],
)
def test_the_accounting_connection_decides_before_the_listing_asked_with_it(
    database: Path, quiet_codat: Codat, change: str, note: str, listing_fault: int | None
) -> None:
    """Both look-ups go out at once, but are read in order: a connection no longer Linked
    cancels the intent whatever the listing says, neither adopting the partner connection it
    shows nor retrying the listing's failure."""
    codat = quiet_codat
    company_id, connection_id, bodies = linked_in_codat(codat, f"Decides First {change}")
    made = codat.http.post(PARTNER_PATH.format(company_id), headers={"Idempotency-Key": "early"})
    assert made.status_code == 200, made.text
    target = f"/companies/{company_id}/connections/{connection_id}"
    if change == "deauthorize":
        codat.admin("POST", f"{target}/deauthorize")
    else:
        codat.admin("DELETE", target)
    if listing_fault:
        listing = f"/companies/{company_id}/connections"
        codat.faults([{"method": "GET", "path": listing, "status": listing_fault, "times": 1}])

    async def scenario() -> None:
        async with harness(database, codat) as run:
            run.start()
            await run.feed(bodies)

            def closed() -> Any:
                effects = run.reads.company_effects(company_id)
                return effects[0] if effects and effects[0].status != "pending" else None

            effect = await run.until(closed, "the intent to be closed")
            assert (effect.status, effect.attempts) == ("cancelled", 1), effect
            assert (effect.result or {})["note"] == note
            assert [p["idempotencyKey"] for p in posts(codat, company_id)] == ["early"]
            listed = [
                r["status"]
                for r in codat.state()["requests"]
                if r["method"] == "GET" and r["path"] == f"/companies/{company_id}/connections"
            ]
            assert listed == [listing_fault or 200]  # asked, and let end

    asyncio.run(scenario())


def test_the_worker_stops_when_cancelled_in_the_step_a_wake_up_comes(
    database: Path, quiet_codat: Codat
) -> None:
    """serve stops its worker by cancelling it; a webhook's wake-up in the same step of the
    loop must not swallow that (asyncio.wait_for on Python 3.11 did: the stop then hung)."""

    async def scenario() -> None:
        async with harness(database, quiet_codat) as run:
            run.start()
            assert run.task is not None
            await asyncio.sleep(0.1)  # the worker is asleep, waiting for a wake-up
            run.worker.wake()
            run.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(run.task, timeout=3)

    asyncio.run(scenario())


def test_a_503_is_retried_with_the_same_idempotency_key_and_shows_as_pending(
    database: Path, quiet_codat: Codat
) -> None:
    codat = quiet_codat
    company_id, _, bodies = linked_in_codat(codat, "Retry Ltd")
    codat.faults([{"method": "POST", "path": PARTNER_PATH.format("*"), "status": 503, "times": 2}])

    async def scenario() -> None:
        async with harness(database, codat) as run:
            run.start()
            await run.feed(bodies)

            def retrying() -> dict[str, Any] | None:
                pending = run.document(company_id)["pending"]
                return pending[0] if pending and pending[0]["attempts"] >= 1 else None

            pending = await run.until(retrying, "a pending command with a failed attempt")
            assert pending["command"] == "create_partner_expense_connection"
            assert pending["status"] == "pending"
            assert "Codat answered 503" in pending["lastError"], pending
            assert pending["nextAttemptAt"] is not None
            document = await run.settled(company_id, "ready")
            assert document["failed"] == []
            answers = posts(codat, company_id)
            assert [p["status"] for p in answers] == [503, 503, 200]
            assert len({p["idempotencyKey"] for p in answers}) == 1
            [effect] = run.reads.company_effects(company_id)
            assert (effect.status, effect.attempts) == ("done", 3)
            assert len(partner_connections(codat.state(), company_id)) == 1

    asyncio.run(scenario())


def test_a_400_ends_the_command_as_failed_with_its_last_error(
    database: Path, quiet_codat: Codat
) -> None:
    codat = quiet_codat
    company_id, _, bodies = linked_in_codat(codat, "Refused Ltd")
    codat.faults([{"method": "POST", "path": PARTNER_PATH.format("*"), "status": 400, "times": 1}])

    async def scenario() -> None:
        async with harness(database, codat) as run:
            run.start()
            await run.feed(bodies)

            def failed() -> dict[str, Any] | None:
                document = run.document(company_id)
                return document if document["failed"] else None

            document = await run.until(failed, "the command to fail")
            [dead] = document["failed"]
            assert (dead["status"], dead["attempts"]) == ("failed", 1)
            assert "Codat answered 400" in dead["lastError"], dead
            assert "Codat answered 400" in document["lastError"]["message"]
            assert document["state"] == "linked" and document["pending"] == []
            types = [e["eventType"] for e in document["events"] if e["source"] == "command"]
            assert types == ["partnerExpenseConnection.failed"]
            # Not retried: nothing is due, however often the worker looks.
            for _ in range(3):
                await run.worker.step()
            assert run.reads.due_effects(clock.after(3600)) == []
            assert len(posts(codat, company_id)) == 1
            assert partner_connections(codat.state(), company_id) == []

    asyncio.run(scenario())


def test_a_command_claimed_by_another_worker_is_not_attempted_twice(
    database: Path, quiet_codat: Codat
) -> None:
    """Two workers on one store (serve and a replay, say): the one holding the claim carries
    out the command; the other leaves it alone, even while Codat is slow to answer."""
    codat = quiet_codat
    company_id, _, bodies = linked_in_codat(codat, "Two Workers Ltd")
    codat.faults([{"method": "POST", "path": PARTNER_PATH.format("*"), "delay": 0.5, "times": 1}])

    async def scenario() -> None:
        async with harness(database, codat) as first, harness(database, codat) as second:
            second.worker.owner = "replay:elsewhere:1"
            first.start()
            await first.feed(bodies)
            await first.until(lambda: posts(codat, company_id), "the first worker's POST")
            for _ in range(5):
                await second.worker.step()
            await first.settled(company_id, "ready")
            await second.worker.drain()
            assert second.worker.effects_run == 0
            assert len(posts(codat, company_id)) == 1
            assert len(partner_connections(codat.state(), company_id)) == 1

    asyncio.run(scenario())


def test_an_intent_replaced_while_its_create_is_under_way_does_not_create_again(
    database: Path, quiet_codat: Codat
) -> None:
    """Worker A is creating the partner connection (Codat slow to answer) when the customer
    unlinks and relinks: worker B folds both, which cancels A's intent and opens another under
    a new Idempotency-Key. B waits for A's attempt to end, then adopts what A created: one
    POST, one partner connection."""
    codat = quiet_codat
    company_id, connection_id, bodies = linked_in_codat(codat, "Relinked Mid Create Ltd")
    codat.faults([{"method": "POST", "path": PARTNER_PATH.format("*"), "delay": 1.0, "times": 1}])

    async def scenario() -> None:
        async with harness(database, codat) as first, harness(database, codat) as second:
            second.worker.owner = "serve:elsewhere.example:1"
            first.start()
            await first.feed(bodies)
            await first.until(lambda: posts(codat, company_id), "the first worker's POST")
            seen = len(codat.state()["events"])
            unlinked = codat.http.patch(
                f"/companies/{company_id}/connections/{connection_id}", json={"status": "Unlinked"}
            )
            assert unlinked.status_code == 200, unlinked.text
            await second.feed(bodies_for(codat, company_id)[3:])
            await second.worker.step()
            seen = len(bodies_for(codat, company_id))
            codat.authorize(company_id, connection_id)
            await second.feed(bodies_for(codat, company_id)[seen:])
            for _ in range(10):
                await second.worker.step()
                await asyncio.sleep(0.02)
            await first.settled(company_id, "ready")
            for _ in range(20):
                second.worker.wake()
                await second.worker.step()
                await second.worker.drain()
            await second.settled(company_id, "ready")
            keys = [p["idempotencyKey"] for p in posts(codat, company_id)]
            assert len(keys) == 1, f"expected one create, found {keys}"
            assert len(partner_connections(codat.state(), company_id)) == 1
            effects = second.reads.company_effects(company_id)
            assert effects[0].status == "cancelled", effects

    asyncio.run(scenario())


def test_at_start_the_claims_of_dead_processes_on_this_host_are_released(
    database: Path, quiet_codat: Codat
) -> None:
    """A crashed serve leaves its claims behind for an hour here: the next worker to start
    releases those of dead pids on this host at once, and leaves other hosts' claims alone."""
    codat = quiet_codat
    crashed, _, crashed_bodies = linked_in_codat(codat, "Dead Claim Ltd")
    remote, _, remote_bodies = linked_in_codat(codat, "Remote Claim Ltd")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    restarted, _, restarted_bodies = linked_in_codat(codat, "Same Pid Ltd")
    owners = {
        crashed: f"serve:{socket.gethostname()}:{int(gone.stdout)}",
        # The same pid, gone here too: only the host tells the two apart.
        remote: f"serve:another-host.example:{int(gone.stdout)}",
        # A process before this one, under this one's pid (a container restarted as pid 1).
        restarted: f"serve:{socket.gethostname()}:{os.getpid()}",
    }

    async def scenario() -> None:
        async with harness(database, codat) as run:
            await run.feed(crashed_bodies + remote_bodies + restarted_bodies)

            def fold_and_claim(store: Store) -> None:
                fold_companies(store, [crashed, remote, restarted], clock.now())
                for company_id, owner in owners.items():
                    [effect] = store.open_effects(company_id)
                    assert store.claim_effect(effect.id, owner, clock.after(3600), clock.now())

            await run.writer.call(fold_and_claim)
            assert sorted(run.reads.claim_owners()) == sorted(owners.values())
            started = time.monotonic()
            run.start()
            await run.settled(crashed, "ready")
            await run.settled(restarted, "ready")
            assert time.monotonic() - started < 5, "the dead claim was waited out, not released"
            assert run.reads.claim_owners() == [owners[remote]]
            assert posts(codat, remote) == []
            assert run.document(remote)["pending"][0]["attempts"] == 0

    asyncio.run(scenario())


def test_intents_claimed_beyond_the_free_slots_hold_their_claims_for_their_wait(
    database: Path, quiet_codat: Codat
) -> None:
    """One slot and three intents claimed at once: the second and third wait for the attempts
    before theirs, and their claims last that much longer, so that they do not expire (and let
    another process start the same attempt) while they wait."""
    codat = quiet_codat
    linked = [linked_in_codat(codat, f"Queued Claim {n} Ltd") for n in range(3)]

    async def scenario() -> None:
        async with harness(database, codat, WORKER_CONCURRENCY="1") as run:
            await run.feed([body for _, _, bodies in linked for body in bodies])
            started = clock.now()
            await run.worker.step()
            with sqlite3.connect(database) as raw:
                expiries = [
                    row[0]
                    for row in raw.execute(
                        "SELECT claim_expires_at FROM effects WHERE claimed_by IS NOT NULL "
                        "ORDER BY claim_expires_at"
                    )
                ]
            await run.worker.drain()
            assert len(expiries) == 3, expiries
            lasting = claim_seconds(run.settings)
            waits = [
                (clock.parse(expiry) - clock.parse(started)).total_seconds() for expiry in expiries
            ]
            for rounds, wait in enumerate(waits, start=1):
                assert rounds * lasting <= wait < rounds * lasting + 2, waits

    asyncio.run(scenario())


class CountingWriter(Writer):
    """The real writer, counting the write transactions asked of it (`call`)."""

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.calls = 0

    async def call(self, fn: Callable[[Store], T]) -> T:
        self.calls += 1
        return await super().call(fn)


def test_the_intents_a_fold_opens_are_claimed_in_the_folds_own_write(
    database: Path, quiet_codat: Codat
) -> None:
    """Three companies linked at once: one step folds them and claims the three intents in one
    write (a claim of its own each had cost a commit each, awaited in turn, before any Codat
    call), and starts all three; each still ends with exactly one partner connection."""
    codat = quiet_codat
    linked = [linked_in_codat(codat, f"Claimed In The Fold {n} Ltd") for n in range(3)]

    async def scenario() -> None:
        async with harness(database, codat) as run:
            counting = CountingWriter(run.settings.database_url)
            counting.start()
            run.worker.writer = counting
            try:
                await run.feed([body for _, _, bodies in linked for body in bodies])
                await run.worker.step()
                assert counting.calls == 1, f"expected 1 write for the step, found {counting.calls}"
                assert run.reads.claim_owners() == [run.worker.owner]
                await run.worker.drain()
                assert run.worker.effects_run == 3
                for company_id, _, _ in linked:
                    run.worker.wake()
                    await run.worker.step()
                    await run.settled(company_id, "ready")
                    assert len(partner_connections(codat.state(), company_id)) == 1
            finally:
                await run.worker.drain()
                await counting.stop()

    asyncio.run(scenario())

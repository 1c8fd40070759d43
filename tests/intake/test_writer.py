"""The group-commit writer (`processor.intake.writer.Writer`) in-process, on a real SQLite file.

What a caller can observe: the InsertResult its own append gets back, when it gets it (only once
the row is committed: another connection sees it), how many commits a crowd of concurrent appends
took (`batches`), and what the file holds afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from processor import clock
from processor.intake.bodies import webhook_event
from processor.intake.writer import MAX_BATCH, Writer
from processor.sandbox.sender import new_message_id
from processor.sandbox.webhook_bodies import company_event, encode, new_company
from store import InsertResult, NewEvent, Store
from tests.support import open_db

T = TypeVar("T")


def company_created(name: str = "Writer Test Ltd", message_id: str | None = None) -> NewEvent:
    """The log entry of a signed company.created webhook, as the intake builds it."""
    body = company_event("company.created", new_company(name))
    return webhook_event(
        body,
        body=encode(body),
        message_id=message_id or new_message_id(),
        timestamp=int(time.time()),
        headers={"webhook-id": "x"},
        received_at=clock.now(),
    )


def run(path: Path, scenario: Callable[[Writer], Awaitable[T]], busy_timeout: float = 5.0) -> T:
    """Run `scenario` against a started writer on `path`, stopping it afterwards."""

    async def main() -> T:
        writer = Writer(f"sqlite:///{path}", busy_timeout=busy_timeout)
        writer.start()
        try:
            return await scenario(writer)
        finally:
            await writer.stop()

    return asyncio.run(main())


@contextmanager
def outsider(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection to the same file, as another process would have."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path) -> dict[str, tuple[int, int, int | None]]:
    """message id -> (seq, deliveries, duplicate_of) of every stored event, read afresh."""
    with outsider(path) as conn:
        found = conn.execute("SELECT message_id, seq, deliveries, duplicate_of FROM events")
        return {row[0]: (row[1], row[2], row[3]) for row in found}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "processor.db"
    open_db(path).close()  # created and migrated, as `serve` does before binding
    return path


def test_concurrent_appends_share_one_commit_and_each_gets_its_own_result(
    database: Path,
) -> None:
    events = [company_created(f"Crowd {n}") for n in range(50)]

    async def scenario(writer: Writer) -> tuple[list[InsertResult], int]:
        results = await asyncio.gather(*(writer.append(event) for event in events))
        return list(results), writer.batches

    results, batches = run(database, scenario)
    assert batches == 1, "50 appends queued together should take one commit"
    stored = rows(database)
    assert len(stored) == 50
    for event, result in zip(events, results, strict=True):
        assert result.status == "stored"
        assert stored[event.message_id][0] == result.seq, "a caller got another's row"
    assert len({result.seq for result in results}) == 50


def test_a_batch_holds_at_most_max_batch_appends(database: Path) -> None:
    count = MAX_BATCH + 10
    events = [company_created(f"Many {n}") for n in range(count)]

    async def scenario(writer: Writer) -> int:
        results = await asyncio.gather(*(writer.append(event) for event in events))
        assert all(result.status == "stored" for result in results)
        return writer.batches

    assert run(database, scenario) == 2
    assert len(rows(database)) == count


def test_appends_arriving_one_after_another_each_commit(database: Path) -> None:
    async def scenario(writer: Writer) -> int:
        for n in range(3):
            assert (await writer.append(company_created(f"Alone {n}"))).status == "stored"
        return writer.batches

    assert run(database, scenario) == 3


def test_nothing_is_acknowledged_before_its_commit(database: Path) -> None:
    """Each caller, the moment its append returns, finds its row from another connection."""
    events = [company_created(f"Durable {n}") for n in range(20)]
    seen: dict[str, bool] = {}

    async def scenario(writer: Writer) -> None:
        with outsider(database) as other:

            async def append_then_look(event: NewEvent) -> None:
                await writer.append(event)
                found = other.execute(
                    "SELECT 1 FROM events WHERE message_id = ?", [event.message_id]
                ).fetchone()
                seen[event.message_id] = found is not None

            await asyncio.gather(*(append_then_look(event) for event in events))

    run(database, scenario)
    assert seen == {event.message_id: True for event in events}


def test_a_duplicate_message_id_is_answered_duplicate_with_the_first_row(database: Path) -> None:
    first = company_created("Twice Ltd")
    again = replace(first, received_at=clock.now())
    later = replace(first, received_at=clock.now())
    other = company_created("Other Ltd")

    async def scenario(writer: Writer) -> list[InsertResult]:
        # The first two in one batch, the third in a batch of its own.
        together = await asyncio.gather(
            writer.append(first), writer.append(other), writer.append(again)
        )
        return [*together, await writer.append(later)]

    first_result, other_result, again_result, later_result = run(database, scenario)
    assert first_result.status == "stored" and other_result.status == "stored"
    assert again_result == InsertResult(first_result.seq, "duplicate")
    assert later_result == InsertResult(first_result.seq, "duplicate")
    stored = rows(database)
    assert len(stored) == 2
    assert stored[first.message_id] == (first_result.seq, 3, None)  # three deliveries, one row


def test_the_same_event_under_another_message_id_is_answered_duplicate(database: Path) -> None:
    first = company_created("Resent Ltd")
    resent = replace(first, message_id=new_message_id())

    async def scenario(writer: Writer) -> list[InsertResult]:
        return list(await asyncio.gather(writer.append(first), writer.append(resent)))

    stored_result, resent_result = run(database, scenario)
    assert stored_result.status == "stored"
    assert resent_result.status == "duplicate"
    assert resent_result.seq != stored_result.seq  # kept, marked as a duplicate of the first
    assert rows(database)[resent.message_id] == (resent_result.seq, 1, stored_result.seq)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda e: replace(e, body=e.body.decode()), id="text-in-a-blob-column"),
        pytest.param(lambda e: replace(e, fields={"x": object()}), id="fields-not-json"),
    ],
)
def test_a_bad_row_fails_its_own_caller_and_loses_none_of_the_others(
    database: Path, spoil: Callable[[NewEvent], NewEvent]
) -> None:
    good = [company_created(f"Good {n}") for n in range(4)]
    bad = spoil(company_created("Bad Ltd"))
    queued = [good[0], good[1], bad, good[2], good[3]]

    async def scenario(writer: Writer) -> list[Any]:
        return list(
            await asyncio.gather(*(writer.append(e) for e in queued), return_exceptions=True)
        )

    results = run(database, scenario)
    assert isinstance(results[2], Exception), results[2]
    assert not isinstance(results[2], sqlite3.OperationalError)
    stored = rows(database)
    assert set(stored) == {event.message_id for event in good}
    for event, result in zip(queued, results, strict=True):
        if event is not bad:
            assert isinstance(result, InsertResult) and result.status == "stored", result
            assert stored[event.message_id][0] == result.seq


def test_a_store_that_cannot_commit_fails_every_caller_and_acknowledges_nothing(
    database: Path,
) -> None:
    """Another process holds the write lock past the busy timeout: every append of the batch
    gets the error (the intake answers 503), nothing is stored; once the lock is gone, the next
    append is stored."""
    events = [company_created(f"Locked {n}") for n in range(5)]

    async def scenario(writer: Writer) -> tuple[list[Any], InsertResult]:
        with outsider(database) as other:
            other.execute("BEGIN IMMEDIATE")
            results = await asyncio.gather(
                *(writer.append(event) for event in events), return_exceptions=True
            )
            other.execute("ROLLBACK")
        return list(results), await writer.append(company_created("After The Lock"))

    results, after = run(database, scenario, busy_timeout=0.2)
    for result in results:
        assert isinstance(result, sqlite3.OperationalError), result
        assert "locked" in str(result)
    assert after.status == "stored"
    assert not set(rows(database)) & {event.message_id for event in events}


def test_a_call_is_one_transaction_and_its_failure_is_its_callers_alone(database: Path) -> None:
    company_a, company_b = str(uuid.uuid4()), str(uuid.uuid4())
    event = company_created("Beside The Calls")

    def save_then_fail(store: Store) -> None:
        store.save_company(company_a, "created", {"company_id": company_a}, clock.now())
        raise RuntimeError("the function failed half way")

    def save(store: Store) -> str:
        store.save_company(company_b, "created", {"company_id": company_b}, clock.now())
        return "saved"

    async def scenario(writer: Writer) -> list[Any]:
        return list(
            await asyncio.gather(
                writer.call(save_then_fail),
                writer.append(event),
                writer.call(save),
                return_exceptions=True,
            )
        )

    failed, appended, saved = run(database, scenario)
    assert isinstance(failed, RuntimeError)
    assert isinstance(appended, InsertResult) and appended.status == "stored"
    assert saved == "saved"
    with outsider(database) as conn:
        companies = {row[0] for row in conn.execute("SELECT company_id FROM companies")}
    assert companies == {company_b}, "the failed call's write must be rolled back"
    assert event.message_id in rows(database)


def test_calls_queued_beside_appends_share_their_one_commit(database: Path) -> None:
    """A fold queued while webhooks wait costs no fsync of its own: on SQLite the appends and
    the calls of one batch are one transaction, committed once, each call still undone alone
    (see the test above)."""
    events = [company_created(f"Shared {n}") for n in range(5)]
    company_id = str(uuid.uuid4())

    def save(store: Store) -> str:
        store.save_company(company_id, "created", {"company_id": company_id}, clock.now())
        return "saved"

    async def scenario(writer: Writer) -> tuple[list[Any], int]:
        done = await asyncio.gather(*(writer.append(e) for e in events), writer.call(save))
        return list(done), writer.commits

    done, commits = run(database, scenario)
    assert done[-1] == "saved" and all(result.status == "stored" for result in done[:-1])
    assert commits == 1, f"expected the 5 appends and the call in 1 commit, found {commits}"
    assert set(rows(database)) == {event.message_id for event in events}


def test_stop_waits_for_every_queued_write(database: Path) -> None:
    events = [company_created(f"At Shutdown {n}") for n in range(30)]

    async def main() -> list[InsertResult]:
        writer = Writer(f"sqlite:///{database}")
        writer.start()
        appends = [asyncio.ensure_future(writer.append(event)) for event in events]
        await asyncio.sleep(0)  # queued, the drain started
        await writer.stop()
        return [task.result() for task in appends]

    results = asyncio.run(main())
    assert [result.status for result in results] == ["stored"] * len(events)
    assert set(rows(database)) == {event.message_id for event in events}


def test_the_raw_body_and_headers_are_stored_as_given(database: Path) -> None:
    event = company_created("Raw Bytes Ltd")

    async def scenario(writer: Writer) -> InsertResult:
        return await writer.append(event)

    result = run(database, scenario)
    with outsider(database) as conn:
        body, headers = conn.execute(
            "SELECT body, headers FROM events WHERE seq = ?", [result.seq]
        ).fetchone()
    assert body == event.body
    assert json.loads(headers) == event.headers

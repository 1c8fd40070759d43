"""The log of calls to Codat noted for each company's timeline: which calls are about a
company, the bound on what is held, and nothing lost when the store refuses a write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from processor.codat.calls import CallLog, company_of, flush
from store import Store, StoreError
from tests.support import open_db

COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"


def test_a_call_is_about_the_company_its_path_names() -> None:
    assert company_of(f"/companies/{COMPANY}/connections/x") == COMPANY
    assert company_of(f"/companies/{COMPANY}") == COMPANY
    assert company_of("/companies") is None
    assert company_of("/integrations/xero") is None


def test_calls_about_no_company_are_not_noted_and_the_oldest_go_beyond_the_bound() -> None:
    calls = CallLog(held=3)
    calls.note("/companies", "POST /companies", "200", 1.0)
    for n in range(5):
        calls.note(f"/companies/{COMPANY}/n{n}", f"GET {n}", "200", float(n))
    assert [c.operation for c in calls.take()] == ["GET 2", "GET 3", "GET 4"]
    assert calls.take() == []


def test_a_refused_write_puts_the_calls_back_for_the_next_flush(tmp_path: Path) -> None:
    calls = CallLog()
    calls.note(f"/companies/{COMPANY}", "GET /companies/{id}", "503", 2.0, "abc")
    store = open_db(tmp_path / "processor.db")

    async def refuse(fn: Callable[[Store], None]) -> None:
        raise StoreError("the store is unavailable: disk full")

    async def write(fn: Callable[[Store], None]) -> None:
        with store.transaction():
            fn(store)

    try:
        asyncio.run(flush(calls, refuse))
        assert len(calls) == 1 and store.codat_calls(COMPANY) == []
        asyncio.run(flush(calls, write))
        assert len(calls) == 0
        [call] = store.codat_calls(COMPANY)
        assert (call.status, call.correlation_id) == ("503", "abc")
    finally:
        store.close()


@pytest.mark.parametrize("held", [1, 2])
def test_put_back_never_exceeds_the_bound(held: int) -> None:
    calls = CallLog(held=held)
    calls.note(f"/companies/{COMPANY}", "GET a", "200", 1.0)
    taken = calls.take()
    calls.note(f"/companies/{COMPANY}", "GET b", "200", 1.0)
    calls.put_back(taken)
    assert len(calls) <= held
    assert [c.operation for c in calls.take()] == (["GET b"] if held == 1 else ["GET a", "GET b"])

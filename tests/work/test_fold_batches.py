"""Folding many companies in one transaction: batched reads and writes, and what happens when
writing one company's fold fails in the database (a trigger refuses it, for real): the others
are folded all the same, and the refused company's events stay pending."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import psycopg
import pytest

from processor import clock
from processor.work.folding import fold_companies, fold_pending, rebuild
from store import Store, open_store, sqlite_path
from tests.store.samples import new_event

pytestmark = pytest.mark.backends("sqlite", "postgres")
POISON = "poison-company"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def refuse_saving(database_url: str, company_id: str) -> None:
    """A trigger that makes the database refuse this company's state."""
    if database_url.startswith("sqlite:"):
        with sqlite3.connect(sqlite_path(database_url)) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON companies "
                f"WHEN NEW.company_id = '{company_id}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        return
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.company_id = '{company_id}' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON companies "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )


def company_events(store: Store, *company_ids: str) -> None:
    with store.transaction():
        store.append_events(
            [
                new_event(f"msg-{n}", event_id=f"evt-{n}", company_id=company_id)
                for n, company_id in enumerate(company_ids)
            ]
        )


def test_a_batch_folds_every_company_as_one_at_a_time_would(store: Store) -> None:
    ids = [f"company-{n}" for n in range(30)]
    company_events(store, *ids, *ids[:5])
    with store.transaction():
        reports = fold_companies(store, ids, clock.now())
    assert [r.company_id for r in reports] == ids
    assert [r.events for r in reports] == [2] * 5 + [1] * 25
    assert store.count_events(pending=True) == 0
    # The reference: each company's log folded again on its own, from scratch.
    for company_id in ids:
        batched = store.company(company_id)
        with store.transaction():
            rebuild(store, company_id, clock.now())
        alone = store.company(company_id)
        assert batched is not None and alone is not None
        assert (batched.state, batched.data) == (alone.state, alone.data), company_id


def test_a_company_the_database_refuses_stays_pending_and_the_others_are_folded(
    store: Store, database_url: str
) -> None:
    refuse_saving(database_url, POISON)
    company_events(store, "first", POISON, "last")
    with store.transaction():
        reports = fold_companies(store, ["first", POISON, "last"], clock.now())
    assert [r.company_id for r in reports] == ["first", "last"]
    assert store.company("first") is not None and store.company("last") is not None
    assert store.company(POISON) is None
    assert [e.company_id for e in store.find_events() if e.processed_at is None] == [POISON]
    # Alone, it fails the same way: the fold is tried again, not lost.
    with pytest.raises((sqlite3.Error, psycopg.Error)), store.transaction():
        fold_pending(store, POISON, clock.now())

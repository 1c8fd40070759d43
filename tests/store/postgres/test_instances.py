"""What keeps several processes on one PostgreSQL database apart: a fold lock per company, a
claim per effect that dies with its connection, a lock per task, readers from a pool.

Each "instance" here is a store of its own: its own connection, as a second `serve` would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from store import Store, StoreError, open_readers, open_store
from tests.store.samples import COMPANY, T0, T1, T2, T3, new_event, opened_intent


@pytest.fixture
def instances(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    first, second = open_store(postgres_url), open_store(postgres_url)
    yield first, second
    first.close()
    second.close()


def terminate(url: str, store: Store) -> None:
    """What the server does when a process dies: its backend ends, its locks with it.

    `pg_terminate_backend` only signals the backend: wait until it is gone (as the others'
    next poll, a second later at most, would)."""
    pid = store.conn.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def test_a_company_is_folded_by_one_transaction_at_a_time(
    instances: tuple[Store, Store],
) -> None:
    a, b = instances
    with a.transaction():
        assert a.lock_company(COMPANY)
        with b.transaction():
            assert not b.lock_company(COMPANY)
            assert b.lock_company("another-company")
    # Released with A's transaction.
    with b.transaction():
        assert b.lock_company(COMPANY)


def test_a_waiting_fold_lock_gives_up_after_the_lock_timeout(postgres_url: str) -> None:
    a, b = open_store(postgres_url), open_store(postgres_url, timeout=0.2)
    try:
        with a.transaction():
            assert a.lock_company(COMPANY)
            with pytest.raises(psycopg.errors.LockNotAvailable), b.transaction():
                b.lock_company(COMPANY, wait=True)
    finally:
        a.close()
        b.close()


def test_a_claim_keeps_other_instances_off_the_effect(instances: tuple[Store, Store]) -> None:
    a, b = instances
    with a.transaction():
        effect_id = opened_intent(a, "key-1")
    with a.transaction():
        assert a.claim_effect(effect_id, "a", until=T2, now=T0)
    assert b.due_effects(T1) == []
    with b.transaction():
        assert not b.claim_effect(effect_id, "b", until=T3, now=T1)
    # Finished by A: gone from the line, the lock released.
    with a.transaction():
        a.retry_effect(effect_id, error="503", next_attempt_at=T1, now=T0)
    assert [e.id for e in b.due_effects(T1)] == [effect_id]
    with b.transaction():
        assert b.claim_effect(effect_id, "b", until=T3, now=T1)


def test_the_claim_of_an_instance_that_dies_is_released_at_once(
    postgres_url: str, instances: tuple[Store, Store]
) -> None:
    a, b = instances
    with a.transaction():
        effect_id = opened_intent(a, "key-1")
    with a.transaction():
        assert a.claim_effect(effect_id, "a", until=T3, now=T0)
    assert b.due_effects(T1) == []
    terminate(postgres_url, a)
    # The row still names A until T3, but A's lock is gone: the effect is due again now.
    assert [e.id for e in b.due_effects(T1)] == [effect_id]
    with b.transaction():
        assert b.claim_effect(effect_id, "b", until=T3, now=T1)
    assert b.claim_owners() == ["b"]


def test_an_intent_another_instance_cancelled_keeps_its_replacement_waiting(
    postgres_url: str, instances: tuple[Store, Store]
) -> None:
    """A is creating the partner connection when B's fold cancels the intent and opens a new
    one (unlinked, linked again): B does not start a second create until A's attempt ends.
    If A dies, its POST may have reached Codat: B waits for A's claim to expire (the intent
    itself would be free at once; see test_the_claim_of_an_instance_that_dies...)."""
    a, b = instances
    with a.transaction():
        first = opened_intent(a, "key-1")
        assert a.claim_effect(first, "a", until=T2, now=T0)
    with b.transaction():
        b.close_effect(first, "cancelled", T0)
        second = opened_intent(b, "key-2")
    assert b.due_effects(T1) == []
    with b.transaction():
        assert not b.claim_effect(second, "b", until=T3, now=T1)
    terminate(postgres_url, a)
    assert b.due_effects(T1) == []
    assert [e.id for e in b.due_effects(T2)] == [second]
    with b.transaction():
        assert b.claim_effect(second, "b", until=T3, now=T2)


def test_an_attempt_running_past_its_claim_still_keeps_the_replacement_waiting(
    instances: tuple[Store, Store],
) -> None:
    """The holder's lock says its attempt is under way, however long it runs: the intent that
    replaced it is not claimed even after the row's claim has expired."""
    a, b = instances
    with a.transaction():
        first = opened_intent(a, "key-1")
        assert a.claim_effect(first, "a", until=T1, now=T0)
    with b.transaction():
        b.close_effect(first, "cancelled", T0)
        second = opened_intent(b, "key-2")
    assert b.due_effects(T3) == []
    with b.transaction():
        assert not b.claim_effect(second, "b", until=T3, now=T2)
    with a.transaction():
        assert not a.finish_effect(first, status="done", now=T2)
    with b.transaction():
        assert b.claim_effect(second, "b", until=T3, now=T2)


def test_a_claim_rolled_back_leaves_no_lock_behind(instances: tuple[Store, Store]) -> None:
    """The claim's lock is a session lock, which a rollback does not undo by itself: the
    store releases it with the row's claim, so other instances need not wait for this one."""
    a, b = instances
    with a.transaction():
        effect_id = opened_intent(a, "key-1")
    with pytest.raises(RuntimeError), a.transaction():
        assert a.claim_effect(effect_id, "a", until=T3, now=T0)
        raise RuntimeError("the rest of the fold failed")
    assert [e.id for e in b.due_effects(T1)] == [effect_id]
    with b.transaction():
        assert b.claim_effect(effect_id, "b", until=T3, now=T1)


def test_a_finished_effect_cannot_be_claimed_by_an_instance_that_waited_for_it(
    instances: tuple[Store, Store],
) -> None:
    a, b = instances
    with a.transaction():
        effect_id = opened_intent(a, "key-1")
    with a.transaction():
        assert a.claim_effect(effect_id, "a", until=T2, now=T0)
    with a.transaction():
        a.finish_effect(effect_id, status="done", now=T1)
    with b.transaction():
        assert not b.claim_effect(effect_id, "b", until=T3, now=T1)
    # B did not keep the lock of the effect it could not claim.
    held = b.conn.execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchone()
    assert held == (0,)


def test_a_task_runs_on_one_instance_until_it_unlocks_or_dies(
    postgres_url: str, instances: tuple[Store, Store]
) -> None:
    a, b = instances
    assert a.lock_task("reconcile")
    assert not b.lock_task("reconcile")
    assert b.lock_task("another task")
    a.unlock_task("reconcile")
    assert b.lock_task("reconcile")
    assert not a.lock_task("reconcile")
    terminate(postgres_url, b)
    assert a.lock_task("reconcile")


def test_a_lost_connection_is_opened_again_by_the_next_call(
    postgres_url: str, instances: tuple[Store, Store]
) -> None:
    a, _ = instances
    terminate(postgres_url, a)
    with a.transaction():
        a.append_events([new_event("msg-1")])
    assert a.count_events() == 1


def test_readers_share_a_pool_and_recover_from_lost_connections(
    postgres_url: str, instances: tuple[Store, Store]
) -> None:
    a, _ = instances
    with a.transaction():
        a.append_events([new_event("msg-1")])
    readers = open_readers(postgres_url, size=2)
    try:
        with readers.reading() as reader:
            assert reader.count_events() == 1
            pid = reader.conn.info.backend_pid  # type: ignore[attr-defined]
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), reader.transaction():
                reader.append_events([new_event("msg-2", event_id="evt-2")])
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with readers.reading() as reader:
            assert reader.count_events() == 1
    finally:
        readers.close()


def test_readers_say_which_database_they_cannot_reach() -> None:
    readers = open_readers("postgresql://app:hunter2@127.0.0.1:1/db", size=1, timeout=0.5)
    try:
        with pytest.raises(StoreError) as raised, readers.reading():
            pass
    finally:
        readers.close()
    assert "'postgresql://app:***@127.0.0.1:1/db'" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_companies_another_transaction_folds_are_left_out_of_a_batch(
    instances: tuple[Store, Store],
) -> None:
    a, b = instances
    with a.transaction():
        assert a.lock_company(COMPANY)
        with b.transaction():
            assert b.lock_companies(["first", COMPANY, "last"]) == ["first", "last"]

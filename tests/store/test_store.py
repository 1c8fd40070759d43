"""The store's contract, run against every backend (`store_url` in tests/store/conftest.py):
the event log, effects, read-only use, pages. Only what `store.Store` offers is used here; what
only SQLite has (files, WAL, migrations) is tested in tests/store/sqlite/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from store import (
    EFFECT_CANCELLED,
    EFFECT_DONE,
    EFFECT_FAILED,
    EFFECT_PENDING,
    Store,
    open_store,
)
from tests.store.samples import (
    COMPANY,
    KIND,
    T0,
    T1,
    T2,
    T3,
    T4,
    new_event,
    open_intent,
    opened_intent,
)

# -- the event log --------------------------------------------------------------------------------


def test_duplicate_message_id_is_one_row_with_two_deliveries(store: Store) -> None:
    with store.transaction():
        [first] = store.append_events([new_event("msg-1", received_at=T0)])
        [second] = store.append_events([new_event("msg-1", received_at=T1)])
    assert first.status == "stored"
    assert second.status == "duplicate"
    assert second.seq == first.seq
    assert store.count_events() == 1
    stored = store.event(first.seq)
    assert stored is not None
    assert stored.deliveries == 2
    assert stored.received_at == T0
    assert [e.seq for e in store.pending_events(COMPANY)] == [first.seq]


def test_a_batch_mixing_new_events_and_every_kind_of_duplicate(store: Store) -> None:
    with store.transaction():
        [known] = store.append_events([new_event("msg-0", event_id="evt-0")])
    batch = [
        new_event("msg-1", event_id="evt-1"),
        new_event("msg-0", event_id="evt-0"),  # stored before
        new_event("msg-2", event_id="evt-1"),  # the same event under another message id
        new_event("msg-1", event_id="evt-1"),  # repeated in the batch
        new_event("msg-3", event_id="evt-3"),
        new_event("msg-4", event_id=None),
    ]
    with store.transaction():
        results = store.append_events(batch)
    assert [r.status for r in results] == [
        "stored",
        "duplicate",
        "duplicate",
        "duplicate",
        "stored",
        "stored",
    ]
    assert results[1].seq == known.seq and results[3].seq == results[0].seq
    stored = [r.seq for r in results if r.status == "stored"]
    assert stored == sorted(stored) and known.seq < stored[0]  # in the order received
    assert store.count_events() == 5  # msg-0..msg-4: msg-2 kept, marked a duplicate
    copy = store.find_events(event_or_message_id="msg-2")
    assert [e.duplicate_of for e in copy] == [results[0].seq]
    first = store.event(results[0].seq)
    assert first is not None and first.deliveries == 2


def test_a_batch_keeps_every_value_as_given(store: Store) -> None:
    """Several events appended at once (one statement on PostgreSQL, of one array per column)
    read back exactly as each would alone: raw bytes (NUL and invalid UTF-8 included), text
    beyond ASCII, absent values, an event already processed."""
    odd = dataclasses.replace(
        new_event("msg-ü", event_id=None, company_id=None, outcome="ignored"),
        body=b"\x00\xff{not json",
        headers={"webhook-id": "msg-ü", "user-agent": "Svix-Webhooks/1.0 \u2603"},
        connection_id=None,
    )
    plain = new_event("msg-2", event_id="evt-2", received_at=T1)
    with store.transaction():
        results = store.append_events([odd, plain])
    assert [r.status for r in results] == ["stored", "stored"]
    assert results[0].seq < results[1].seq
    assert store.raw_event(results[0].seq) == (odd.body, odd.headers)
    first, second = store.event(results[0].seq), store.event(results[1].seq)
    assert first is not None and second is not None
    assert (first.message_id, first.event_id, first.company_id, first.connection_id) == (
        "msg-ü",
        None,
        None,
        None,
    )
    assert (first.outcome, first.processed_at, first.duplicate_of) == ("ignored", T0, None)
    assert (second.event_id, second.company_id, second.received_at) == ("evt-2", COMPANY, T1)
    assert (second.outcome, second.processed_at, second.fields) == (None, None, plain.fields)


def test_duplicate_message_id_in_one_batch_is_one_row(store: Store) -> None:
    with store.transaction():
        results = store.append_events([new_event("msg-1"), new_event("msg-1")])
    assert [r.status for r in results] == ["stored", "duplicate"]
    assert store.count_events() == 1
    stored = store.event(results[0].seq)
    assert stored is not None
    assert stored.deliveries == 2


def test_same_event_id_with_another_message_id_is_a_recorded_duplicate(store: Store) -> None:
    with store.transaction():
        [first] = store.append_events([new_event("msg-1", event_id="evt-1")])
        [second] = store.append_events([new_event("msg-2", event_id="evt-1", received_at=T1)])
    assert second.seq != first.seq
    assert second.status == "duplicate"
    assert store.count_events() == 2
    duplicate = store.event(second.seq)
    assert duplicate is not None
    assert duplicate.duplicate_of == first.seq
    assert duplicate.outcome == "duplicate"
    assert duplicate.processed_at == T1
    original = store.event(first.seq)
    assert original is not None
    assert original.duplicate_of is None
    assert original.outcome is None
    # Only the original waits to be folded.
    assert [e.seq for e in store.pending_events(COMPANY)] == [first.seq]
    found = store.find_events(event_or_message_id="evt-1")
    assert [e.seq for e in found] == [first.seq, second.seq]


def test_events_without_an_event_id_are_never_duplicates_of_each_other(store: Store) -> None:
    with store.transaction():
        results = store.append_events(
            [new_event("msg-1", event_id=None), new_event("msg-2", event_id=None)]
        )
    assert [r.status for r in results] == ["stored", "stored"]
    assert len(store.pending_events(COMPANY)) == 2


def test_event_without_company_is_stored_already_processed(store: Store) -> None:
    with store.transaction():
        [result] = store.append_events([new_event("msg-1", company_id=None, outcome="ignored")])
    stored = store.event(result.seq)
    assert stored is not None
    assert stored.outcome == "ignored"
    assert stored.processed_at == T0
    assert store.pending_company_ids() == []
    assert store.count_events(pending=True) == 0
    assert store.count_events() == 1


def test_pending_events_are_oldest_generated_first_and_fold_marks_them(store: Store) -> None:
    with store.transaction():
        store.append_events(
            [
                new_event("msg-1", event_id="evt-1", generated_date=T2),
                new_event("msg-2", event_id="evt-2", generated_date=T0),
                new_event("msg-3", event_id="evt-3", generated_date=T1),
            ]
        )
    pending = store.pending_events(COMPANY)
    assert [e.message_id for e in pending] == ["msg-2", "msg-3", "msg-1"]
    with store.transaction():
        store.mark_folded([(e.seq, "applied") for e in pending], T3)
    assert store.pending_events(COMPANY) == []
    folded = store.folded_events(COMPANY)
    assert [e.message_id for e in folded] == ["msg-2", "msg-3", "msg-1"]
    assert {e.outcome for e in folded} == {"applied"}


def test_raw_body_and_headers_are_kept_as_received(store: Store) -> None:
    with store.transaction():
        [result] = store.append_events([new_event("msg-1")])
    raw = store.raw_event(result.seq)
    assert raw == (b'{"eventType":"connection.connected"}', {"webhook-id": "msg-1"})


def test_a_rolled_back_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.append_events([new_event("msg-1")])
        raise RuntimeError("crash before commit")
    assert store.count_events() == 0


# -- effects --------------------------------------------------------------------------------------


def test_only_one_pending_effect_per_company_and_kind(store: Store) -> None:
    with store.transaction():
        first = open_intent(store, "key-1")
        again = open_intent(store, "key-2")
        other_kind = open_intent(store, "key-3", kind="another_kind")
        other_company = open_intent(store, "key-4", company_id="another-company")
    assert first is not None
    assert again is None
    assert other_kind is not None
    assert other_company is not None
    assert [e.id for e in store.open_effects(COMPANY) if e.kind == KIND] == [first]
    effect = store.effect(first)
    assert effect is not None
    assert effect.status == EFFECT_PENDING
    assert effect.idempotency_key == "key-1"
    assert effect.attempts == 0


@pytest.mark.parametrize("closed", [EFFECT_DONE, EFFECT_FAILED, EFFECT_CANCELLED])
def test_a_closed_effect_lets_a_new_one_open(store: Store, closed: str) -> None:
    with store.transaction():
        first = opened_intent(store, "key-1")
        store.finish_effect(first, status=closed, now=T1)
        second = open_intent(store, "key-2")
        third = open_intent(store, "key-3")
    assert second is not None
    assert second != first
    assert third is None
    assert [e.id for e in store.open_effects(COMPANY)] == [second]


def test_the_same_idempotency_key_is_never_recorded_twice(store: Store) -> None:
    with store.transaction():
        first = opened_intent(store, "key-1")
        store.finish_effect(first, status=EFFECT_DONE, now=T1)
        again = open_intent(store, "key-1")
    assert again is None
    assert [e.id for e in store.company_effects(COMPANY)] == [first]


def test_claim_is_exclusive_until_it_expires(store: Store) -> None:
    with store.transaction():
        effect_id = opened_intent(store, "key-1")
    assert [e.id for e in store.due_effects(T0)] == [effect_id]
    assert store.claim_effect(effect_id, "worker-a", until=T2, now=T0)
    assert store.due_effects(T1) == []
    assert not store.claim_effect(effect_id, "worker-b", until=T3, now=T1)
    assert not store.claim_effect(effect_id, "worker-a", until=T3, now=T1)
    # At the expiry the claim is free again, for anyone.
    assert [e.id for e in store.due_effects(T2)] == [effect_id]
    assert store.claim_effect(effect_id, "worker-b", until=T4, now=T2)
    assert store.claim_owners() == ["worker-b"]
    assert not store.claim_effect(effect_id, "worker-a", until=T4, now=T3)


def test_retry_releases_the_claim_and_a_closed_effect_cannot_be_claimed(store: Store) -> None:
    with store.transaction():
        effect_id = opened_intent(store, "key-1")
    assert store.claim_effect(effect_id, "worker-a", until=T4, now=T0)
    store.retry_effect(effect_id, error="503 maintenance", next_attempt_at=T2, now=T1)
    effect = store.effect(effect_id)
    assert effect is not None
    assert effect.attempts == 1
    assert effect.last_error == "503 maintenance"
    assert store.due_effects(T1) == []
    assert [e.id for e in store.due_effects(T2)] == [effect_id]
    assert store.claim_effect(effect_id, "worker-b", until=T3, now=T2)
    store.finish_effect(effect_id, status=EFFECT_DONE, now=T3, result={"connectionId": "x"})
    assert not store.claim_effect(effect_id, "worker-c", until=T4, now=T4)
    done = store.effect(effect_id)
    assert done is not None
    assert done.status == EFFECT_DONE
    assert done.result == {"connectionId": "x"}
    assert done.attempts == 2


@pytest.mark.parametrize("closed", [EFFECT_DONE, EFFECT_CANCELLED])
def test_a_late_attempt_does_not_overwrite_how_an_effect_ended(store: Store, closed: str) -> None:
    """An attempt that ran on after its claim was lost (its holder's connection reset, or a
    rebuild cancelled the intent) records nothing over the end another process gave it."""
    with store.transaction():
        effect_id = opened_intent(store, "key-1")
        assert store.finish_effect(effect_id, status=closed, now=T1, result={"connectionId": "a"})
    with store.transaction():
        assert not store.retry_effect(effect_id, error="503", next_attempt_at=T3, now=T2)
        assert not store.finish_effect(effect_id, status=EFFECT_FAILED, now=T2, error="gave up")
        assert not store.finish_effect(effect_id, status=EFFECT_DONE, now=T2, result={"x": 1})
    ended = store.effect(effect_id)
    assert ended is not None
    assert (ended.status, ended.result, ended.last_error, ended.attempts) == (
        closed,
        {"connectionId": "a"},
        None,
        1,
    )


def _failed_effect_caused_by(store: Store, message_id: str) -> tuple[int, int]:
    with store.transaction():
        [stored] = store.append_events([new_event(message_id)])
        effect_id = store.open_effect(
            company_id=COMPANY,
            kind=KIND,
            connection_id="conn-1",
            idempotency_key="key-1",
            caused_by=stored.seq,
            now=T0,
        )
        assert effect_id is not None
        store.finish_effect(effect_id, status=EFFECT_FAILED, now=T1, error="402 limit")
    return stored.seq, effect_id


def test_redelivery_requeues_the_failed_effect_it_caused(store: Store) -> None:
    seq, effect_id = _failed_effect_caused_by(store, "msg-1")
    assert [e.id for e in store.failed_effects()] == [effect_id]
    assert [e.seq for e in store.find_events(failed=True)] == [seq]
    with store.transaction():
        [again] = store.append_events([new_event("msg-1", received_at=T2)])
    assert again.status == "requeued"
    assert again.seq == seq
    effect = store.effect(effect_id)
    assert effect is not None
    assert effect.status == EFFECT_PENDING
    assert effect.attempts == 0
    assert effect.next_attempt_at == T2
    assert effect.idempotency_key == "key-1"
    assert store.failed_effects() == []
    assert [e.id for e in store.due_effects(T2)] == [effect_id]
    # A further delivery finds nothing failed: a plain duplicate.
    with store.transaction():
        [third] = store.append_events([new_event("msg-1", received_at=T3)])
    assert third.status == "duplicate"
    stored = store.event(seq)
    assert stored is not None
    assert stored.deliveries == 3


def test_redelivery_does_not_requeue_when_another_effect_is_open(store: Store) -> None:
    _, failed_id = _failed_effect_caused_by(store, "msg-1")
    with store.transaction():
        open_id = open_intent(store, "key-2")
        [again] = store.append_events([new_event("msg-1", received_at=T2)])
    assert again.status == "duplicate"
    failed = store.effect(failed_id)
    assert failed is not None
    assert failed.status == EFFECT_FAILED
    assert [e.id for e in store.open_effects(COMPANY)] == [open_id]


def test_close_effect_cancels_an_open_effect_and_frees_its_slot(store: Store) -> None:
    with store.transaction():
        effect_id = opened_intent(store, "key-1")
        assert store.claim_effect(effect_id, "worker-a", until=T4, now=T0)
        store.close_effect(effect_id, EFFECT_CANCELLED, T1)
        # Closing is only for open effects: a closed one keeps its status.
        store.close_effect(effect_id, EFFECT_DONE, T2)
        replacement = open_intent(store, "key-2")
    effect = store.effect(effect_id)
    assert effect is not None
    assert effect.status == EFFECT_CANCELLED
    assert effect.updated_at == T1
    assert replacement is not None
    assert [e.id for e in store.open_effects(COMPANY)] == [replacement]
    assert not store.claim_effect(effect_id, "worker-b", until=T4, now=T3)


def test_the_replacement_of_an_intent_cancelled_mid_attempt_waits_for_that_attempt(
    store: Store,
) -> None:
    """A fold cancels an intent while an attempt at it is under way, then opens another of the
    same kind (the connection unlinked and linked again). Two creates at once, under two
    Idempotency-Keys, would make two partner expense connections: the replacement is not
    claimed until the first attempt ends."""
    with store.transaction():
        first = opened_intent(store, "key-1")
        assert store.claim_effect(first, "worker-a", until=T4, now=T0)
    with store.transaction():
        store.close_effect(first, EFFECT_CANCELLED, T1)
        second = opened_intent(store, "key-2")
    assert store.due_effects(T1) == []
    assert store.next_effect_due() == T4
    with store.transaction():
        assert not store.claim_effect(second, "worker-b", until=T4, now=T1)
    # The first attempt ends (its result recorded against a closed intent: nothing changes
    # but its claim).
    with store.transaction():
        assert not store.finish_effect(first, status=EFFECT_DONE, now=T2, result={"x": 1})
    cancelled = store.effect(first)
    assert cancelled is not None
    assert (cancelled.status, cancelled.result) == (EFFECT_CANCELLED, None)
    assert store.claim_owners() == []
    assert [e.id for e in store.due_effects(T2)] == [second]
    with store.transaction():
        assert store.claim_effect(second, "worker-b", until=T4, now=T2)


@pytest.mark.parametrize("end", ["expires", "released"])
def test_the_claim_on_a_cancelled_intent_ends_like_any_claim(store: Store, end: str) -> None:
    with store.transaction():
        first = opened_intent(store, "key-1")
        assert store.claim_effect(first, "serve:elsewhere:1", until=T3, now=T0)
        store.close_effect(first, EFFECT_CANCELLED, T1)
        second = opened_intent(store, "key-2")
    assert store.claim_owners() == ["serve:elsewhere:1"]
    now = T1
    if end == "expires":
        now = T3
    else:
        assert store.release_claims("serve:elsewhere:1") == 1
    assert [e.id for e in store.due_effects(now)] == [second]
    with store.transaction():
        assert store.claim_effect(second, "worker-b", until=T4, now=now)


@pytest.mark.parametrize("answered", [True, False])
def test_a_failed_attempt_at_a_cancelled_intent_ends_its_claim_or_holds_it_a_while(
    store: Store, answered: bool
) -> None:
    """An attempt that failed with Codat's answer ends its claim at once; one that got no
    answer (a timeout) may still be acted on by Codat: its replacement waits until
    `hold_until` (within the claim)."""
    with store.transaction():
        first = opened_intent(store, "key-1")
        assert store.claim_effect(first, "worker-a", until=T4, now=T0)
        store.close_effect(first, EFFECT_CANCELLED, T1)
        second = opened_intent(store, "key-2")
    with store.transaction():
        assert not store.retry_effect(
            first,
            error="timed out" if not answered else "503",
            next_attempt_at=T2,
            now=T1,
            hold_until=None if answered else T3,
        )
    if answered:
        assert [e.id for e in store.due_effects(T1)] == [second]
    else:
        assert store.due_effects(T2) == []
        with store.transaction():
            assert not store.claim_effect(second, "worker-b", until=T4, now=T2)
        assert [e.id for e in store.due_effects(T3)] == [second]
    with store.transaction():
        assert store.claim_effect(second, "worker-b", until=T4, now=T3)
    cancelled = store.effect(first)
    assert cancelled is not None
    assert (cancelled.status, cancelled.attempts, cancelled.last_error) == (
        EFFECT_CANCELLED,
        0,
        None,
    )


def test_the_hold_of_an_unanswered_attempt_outlasts_a_claim_that_expired_meanwhile(
    store: Store,
) -> None:
    with store.transaction():
        first = opened_intent(store, "key-1")
        assert store.claim_effect(first, "worker-a", until=T1, now=T0)
        store.close_effect(first, EFFECT_CANCELLED, T0)
        second = opened_intent(store, "key-2")
    with store.transaction():
        assert not store.retry_effect(
            first, error="timed out", next_attempt_at=T3, now=T2, hold_until=T3, owner="worker-a"
        )
    assert store.due_effects(T2) == []
    assert [e.id for e in store.due_effects(T3)] == [second]


def test_a_late_attempt_does_not_end_the_claim_another_process_took_since(store: Store) -> None:
    """A's claim expired while its call ran on; R claimed the intent, which was then cancelled
    and replaced. A's attempt ending ends no claim but its own: R's attempt still keeps the
    replacement waiting until R's ends."""
    with store.transaction():
        first = opened_intent(store, "key-1")
        assert store.claim_effect(first, "worker-a", until=T1, now=T0)
    with store.transaction():
        assert store.claim_effect(first, "replay-r", until=T4, now=T1)
        store.close_effect(first, EFFECT_CANCELLED, T1)
        second = opened_intent(store, "key-2", now=T1)
    with store.transaction():
        assert not store.finish_effect(first, status=EFFECT_DONE, now=T2, owner="worker-a")
        assert not store.retry_effect(
            first, error="503", next_attempt_at=T2, now=T2, owner="worker-a"
        )
    assert store.claim_owners() == ["replay-r"]
    assert store.due_effects(T2) == []
    with store.transaction():
        assert not store.finish_effect(first, status=EFFECT_DONE, now=T3, owner="replay-r")
    assert [e.id for e in store.due_effects(T3)] == [second]


def test_an_intent_knows_when_the_first_of_its_kind_was_opened(store: Store) -> None:
    with store.transaction():
        first = opened_intent(store, "key-1")
        store.close_effect(first, EFFECT_CANCELLED, T1)
        second = opened_intent(store, "key-2", now=T2)
        other_kind = opened_intent(store, "key-3", kind="read_expense_configuration", now=T3)

    found = {e.id: e for e in store.company_effects(COMPANY)}
    assert (found[second].created_at, found[second].first_of_kind_at) == (T2, T0)
    assert found[first].first_of_kind_at == T0
    assert found[other_kind].first_of_kind_at == T3
    [opened] = store.open_effects_of([COMPANY])[COMPANY][:1]
    assert opened.first_of_kind_at == T0
    # Once one of the kind is done, the next counts from its own opening.
    with store.transaction():
        assert store.finish_effect(second, status=EFFECT_DONE, now=T3)
        third = opened_intent(store, "key-4", now=T4)
    after_done = store.effect(third)
    assert after_done is not None and after_done.first_of_kind_at == T4


def test_a_failed_savepoint_is_undone_alone(store: Store) -> None:
    with store.transaction():
        store.append_events([new_event("msg-1", event_id="evt-1")])
        with pytest.raises(RuntimeError), store.savepoint():
            store.append_events([new_event("msg-2", event_id="evt-2")])
            raise RuntimeError("this company's fold failed")
        with store.savepoint():
            store.append_events([new_event("msg-3", event_id="evt-3")])
    assert [e.message_id for e in store.pending_events(COMPANY)] == ["msg-1", "msg-3"]


# -- read-only use --------------------------------------------------------------------------------


def test_readonly_store_reads_but_cannot_write(
    store: Store, store_url: str, refused_write: tuple[type[Exception], ...]
) -> None:
    with store.transaction():
        store.append_events([new_event("msg-1")])
        store.save_company(COMPANY, "linked", {"company_id": COMPANY}, T0)
    reader = open_store(store_url, readonly=True)
    try:
        assert reader.readonly
        row = reader.company(COMPANY)
        assert row is not None
        assert row.state == "linked"
        assert len(reader.pending_events(COMPANY)) == 1
        writes: list[Callable[[], object]] = [
            lambda: reader.append_events([new_event("msg-2", event_id="evt-2")]),
            lambda: reader.save_company(COMPANY, "ready", {"company_id": COMPANY}, T1),
            lambda: reader.open_effect(
                company_id=COMPANY,
                kind=KIND,
                connection_id=None,
                idempotency_key="key-1",
                caused_by=None,
                now=T1,
            ),
            lambda: reader.mark_folded([(1, "applied")], T1),
            lambda: reader.delete_company_state(COMPANY),
            lambda: reader.heartbeat(T1),
            lambda: reader.save_options(COMPANY, {"suppliers": []}, T1),
            lambda: reader.save_syncs(COMPANY, [("s-1", T1, None, {})], T1),
        ]
        for write in writes:
            with pytest.raises(refused_write):
                write()
        # A readonly reader sees what the writer commits later.
        with store.transaction():
            store.save_company(COMPANY, "ready", {"company_id": COMPANY}, T2)
        later = reader.company(COMPANY)
        assert later is not None
        assert later.state == "ready"
    finally:
        reader.close()
    assert store.count_events() == 1
    assert store.company_effects(COMPANY) == []


# -- company pages --------------------------------------------------------------------------------


def _save_companies(store: Store, count: int) -> list[str]:
    states = ("created", "pending_auth", "linked", "ready", "disconnected")
    ids = [f"company-{n:03d}" for n in range(count)]
    with store.transaction():
        # Saved out of order: pages come back ordered by id regardless.
        for n, company_id in reversed(list(enumerate(ids))):
            data = {"company_id": company_id}
            store.save_company(company_id, states[n % len(states)], data, T0)
    return ids


def _all_pages(store: Store, *, state: str | None, limit: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = store.companies(state=state, limit=limit, after=after)
        pages.append([row.company_id for row in page.companies])
        if page.next_after is None:
            return pages
        assert page.next_after == page.companies[-1].company_id
        after = page.next_after


def test_companies_are_paged_by_id_without_overlap_or_gaps(store: Store) -> None:
    ids = _save_companies(store, 25)
    pages = _all_pages(store, state=None, limit=10)
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [company for page in pages for company in page] == ids


def test_last_full_page_has_no_next_cursor(store: Store) -> None:
    ids = _save_companies(store, 20)
    pages = _all_pages(store, state=None, limit=10)
    assert [len(page) for page in pages] == [10, 10]
    assert [company for page in pages for company in page] == ids
    single = store.companies(state=None, limit=50, after=None)
    assert single.next_after is None
    assert len(single.companies) == 20


def test_companies_filtered_by_state_are_paged(store: Store) -> None:
    ids = _save_companies(store, 25)
    pages = _all_pages(store, state="linked", limit=2)
    linked = [company for n, company in enumerate(ids) if n % 5 == 2]
    assert [company for page in pages for company in page] == linked
    assert [len(page) for page in pages] == [2, 2, 1]
    assert store.state_counts() == {
        "created": 5,
        "pending_auth": 5,
        "linked": 5,
        "ready": 5,
        "disconnected": 5,
    }


def test_empty_store_has_one_empty_page(store: Store) -> None:
    page = store.companies(state=None, limit=10, after=None)
    assert page.companies == []
    assert page.next_after is None
    assert store.companies(state="ready", limit=10, after="zzz").companies == []


def test_save_company_updates_in_place(store: Store) -> None:
    with store.transaction():
        store.save_company(COMPANY, "created", {"company_id": COMPANY, "name": "A"}, T0)
        store.save_company(COMPANY, "pending_auth", {"company_id": COMPANY, "name": "B"}, T1)
    row = store.company(COMPANY)
    assert row is not None
    assert (row.state, row.data["name"], row.updated_at) == ("pending_auth", "B", T1)
    assert store.company_ids() == [COMPANY]
    assert store.state_counts() == {"pending_auth": 1}


# -- the snapshot of a company's expense configuration choices ----------------------------------


def test_options_are_none_until_fetched_then_the_latest_snapshot(store: Store) -> None:
    assert store.options(COMPANY) is None
    first = {"accounts": [{"id": "a-1", "name": "Current"}], "suppliers": [], "customers": []}
    second = {"accounts": [], "suppliers": [{"id": "s-1", "name": "Rail \u00e9"}], "customers": []}
    with store.transaction():
        store.save_options(COMPANY, first, T0)
        store.save_options("other-company", first, T0)
    snapshot = store.options(COMPANY)
    assert snapshot is not None
    assert (snapshot.company_id, snapshot.fetched_at, snapshot.data) == (COMPANY, T0, first)
    with store.transaction():
        store.save_options(COMPANY, second, T1)
    replaced = store.options(COMPANY)
    assert replaced is not None
    assert (replaced.fetched_at, replaced.data) == (T1, second)
    other = store.options("other-company")
    assert other is not None and other.data == first


def test_options_written_in_a_rolled_back_transaction_are_not_kept(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.save_options(COMPANY, {"suppliers": []}, T0)
        raise RuntimeError("undo")
    assert store.options(COMPANY) is None


def test_a_read_snapshot_sees_one_moment_of_the_store(store: Store, store_url: str) -> None:
    with store.transaction():
        store.append_events([new_event("msg-1")])
    reader = open_store(store_url, readonly=True)
    try:
        with reader.read_snapshot():
            assert reader.count_events() == 1
            with store.transaction():
                store.append_events([new_event("msg-2", event_id="evt-2")])
            assert reader.count_events() == 1
            assert reader.find_events(event_or_message_id="msg-2") == []
        assert reader.count_events() == 2
    finally:
        reader.close()


def test_the_batched_reads_and_writes_of_a_fold(store: Store) -> None:
    """What folding many companies in one transaction uses: the same as one at a time."""
    other = "other-company"
    with store.transaction():
        store.append_events(
            [
                new_event("msg-1", event_id="evt-1", generated_date=T2),
                new_event("msg-2", event_id="evt-2", generated_date=T1),
                new_event("msg-3", event_id="evt-3", company_id=other),
            ]
        )
    with store.transaction():
        assert store.lock_companies([COMPANY, other, "nobody"]) == [COMPANY, other, "nobody"]
        pending = store.pending_events_of([COMPANY, other, "nobody"])
    assert pending[COMPANY] == store.pending_events(COMPANY)
    assert [e.message_id for e in pending[COMPANY]] == ["msg-2", "msg-1"]  # generatedDate
    assert [e.message_id for e in pending[other]] == ["msg-3"]
    assert pending["nobody"] == []
    with store.transaction():
        store.save_company(COMPANY, "created", {"v": 1}, T0)
        store.save_companies([(COMPANY, "linked", {"v": 2}), (other, "created", {"w": "é"})], T1)
        store.save_companies([], T1)
    states = store.companies_of([COMPANY, other, "nobody"])
    assert set(states) == {COMPANY, other}
    assert (states[COMPANY].state, states[COMPANY].data) == ("linked", {"v": 2})
    assert states[COMPANY] == store.company(COMPANY)
    assert (states[other].data, states[other].updated_at) == ({"w": "é"}, T1)


def test_the_oldest_pending_event_says_how_far_behind_the_folds_are(store: Store) -> None:
    assert store.oldest_pending_received_at() is None
    with store.transaction():
        [first, _] = store.append_events(
            [new_event("msg-1", received_at=T1), new_event("msg-2", event_id="e2", received_at=T2)]
        )
    assert store.oldest_pending_received_at() == T1
    with store.transaction():
        store.mark_folded([(first.seq, "applied")], T3)
    assert store.oldest_pending_received_at() == T2


# -- every expense sync of a company --------------------------------------------------------------


def _sync(sync_id: str, at: str, outcome: str | None = "successful") -> tuple[str, str, Any, Any]:
    return (sync_id, at, outcome, {"sync_id": sync_id, "at": at, "outcome": outcome})


def test_syncs_are_replaced_by_sync_id_and_read_back_by_id(store: Store) -> None:
    assert store.sync_rows(COMPANY, ["s-1"]) == {}
    with store.transaction():
        store.save_syncs(COMPANY, [_sync("s-1", T0), _sync("s-2", T1, "failed")], T1)
        store.save_syncs("other-company", [_sync("s-1", T2)], T2)
    with store.transaction():
        store.save_syncs(COMPANY, [_sync("s-1", T0, "failed")], T3)
    rows = store.sync_rows(COMPANY, ["s-1", "s-2", "s-9"])
    assert sorted(rows) == ["s-1", "s-2"]
    assert (rows["s-1"].outcome, rows["s-1"].updated_at, rows["s-1"].data["outcome"]) == (
        "failed",
        T3,
        "failed",
    )
    assert store.sync_rows("other-company", ["s-1"])["s-1"].at == T2


def test_syncs_are_paged_newest_first_without_overlap_or_gaps(store: Store) -> None:
    times = [T0, T1, T1, T2, T3, T4, T4]
    with store.transaction():
        store.save_syncs(COMPANY, [_sync(f"s-{n}", at) for n, at in enumerate(times)], T4)
        store.save_syncs("other-company", [_sync("s-x", T4)], T4)
    pages, after = [], None
    while True:
        page = store.syncs(COMPANY, limit=3, after=after)
        pages.append([(row.at, row.sync_id) for row in page.syncs])
        if page.next_after is None:
            break
        after = page.next_after
    seen = [entry for page in pages for entry in page]
    assert seen == sorted(((at, f"s-{n}") for n, at in enumerate(times)), reverse=True)
    assert [len(page) for page in pages] == [3, 3, 1]


def test_syncs_written_in_a_rolled_back_transaction_are_not_kept(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.save_syncs(COMPANY, [_sync("s-1", T0)], T0)
        raise RuntimeError("undo")
    assert store.syncs(COMPANY, limit=10).syncs == []

"""The store's batched reads for replay, on every backend: each must answer as the one-company
read it stands for (`folded_events` + `pending_events`, `open_effects`, `find_events`)."""

from __future__ import annotations

from store import EFFECT_CANCELLED, Store, StoredEvent, open_store
from store.records import LoggedEvent
from tests.store.samples import COMPANY, T0, T1, T2, T3, new_event, opened_intent

OTHER = "other-company"


def test_replay_logs_of_is_each_companys_folded_then_pending_events(store: Store) -> None:
    with store.transaction():
        store.append_events(
            [
                new_event("msg-1", event_id="evt-1", generated_date=T2),
                new_event("msg-2", event_id="evt-2", generated_date=T0),
                new_event("msg-3", event_id="evt-3", company_id=OTHER),
                # Neither folded nor pending: a duplicate and an event stored already decided.
                new_event("msg-4", event_id="evt-1"),
                new_event("msg-5", event_id="evt-5", outcome="ignored"),
            ]
        )
    pending = store.pending_events(COMPANY)
    with store.transaction():
        # Folded in the opposite order of generatedDate: the fold order is what counts.
        store.mark_folded([(pending[1].seq, "applied"), (pending[0].seq, "stale")], T3)
        store.append_events(
            [
                new_event("msg-6", event_id="evt-6", generated_date=T1),
                new_event("msg-7", event_id="evt-7", generated_date=T0),
            ]
        )
    logs = store.replay_logs_of([COMPANY, OTHER, "nobody"])
    assert set(logs) == {COMPANY, OTHER, "nobody"}
    folded, waiting = logs[COMPANY]
    assert [e.seq for e in folded] == [pending[1].seq, pending[0].seq]  # msg-1, msg-2
    assert [e.outcome for e in folded] == ["applied", "stale"]
    assert [e.generated_date for e in waiting] == [T0, T1]  # msg-7, msg-6
    # The same events in the same order as the one-company reads, with what a rebuild needs.
    for company_id in (COMPANY, OTHER, "nobody"):
        assert logs[company_id] == (
            [_logged(e) for e in store.folded_events(company_id)],
            [_logged(e) for e in store.pending_events(company_id)],
        ), company_id
    assert logs["nobody"] == ([], [])
    assert store.replay_logs_of([]) == {}
    # Read as a range of ids, unsorted: the same logs, and only of the companies asked for
    # (OTHER lies between COMPANY and "pz" in byte order, and is left out).
    assert store.replay_logs_of(["nobody", OTHER, COMPANY], key_range=True) == logs
    assert COMPANY < OTHER < "pz"
    assert store.replay_logs_of(["pz", COMPANY], key_range=True) == {
        "pz": ([], []),
        COMPANY: logs[COMPANY],
    }
    assert store.replay_logs_of([], key_range=True) == {}


def _logged(event: StoredEvent) -> LoggedEvent:
    return LoggedEvent(
        event.seq,
        event.event_type,
        event.source,
        event.company_id,
        event.generated_date,
        event.fields,
        event.processed_at,
        event.outcome,
    )


def test_states_of_is_each_stored_companys_state(store: Store) -> None:
    with store.transaction():
        store.save_companies(
            [(COMPANY, "linked", {"company_id": COMPANY}), (OTHER, "ready", {"company_id": OTHER})],
            T0,
        )
    found = store.states_of([COMPANY, OTHER, "nobody"])
    assert found == {COMPANY: "linked", OTHER: "ready"}
    rows = store.companies_of([COMPANY, OTHER, "nobody"])
    assert found == {company_id: row.state for company_id, row in rows.items()}
    assert store.states_of([]) == {}


def test_replay_states_of_is_each_stored_companys_state_and_data(store: Store) -> None:
    third = "third-company"
    with store.transaction():
        store.save_companies(
            [
                (COMPANY, "linked", {"company_id": COMPANY, "watermarks": {"a": "b"}}),
                (OTHER, "ready", {"company_id": OTHER, "name": "Ünïcode"}),
                (third, "created", {"company_id": third}),
            ],
            T0,
        )
    rows = store.companies_of([COMPANY, OTHER, third, "nobody"])
    everything = {company_id: (row.state, row.data) for company_id, row in rows.items()}
    assert set(everything) == {COMPANY, OTHER, third}
    wanted = [third, COMPANY, "nobody"]  # OTHER lies between them, and is left out
    assert COMPANY < OTHER < third
    expected = {company_id: everything[company_id] for company_id in (COMPANY, third)}
    assert store.replay_states_of(wanted) == expected
    assert store.replay_states_of(wanted, key_range=True) == expected
    assert store.replay_states_of([]) == {}
    assert store.replay_states_of([], key_range=True) == {}


def test_matching_companies_are_paged_by_id_and_counted(store: Store) -> None:
    companies = [f"company-{n:02}" for n in range(7)]
    with store.transaction():
        store.append_events(
            [
                new_event(
                    f"msg-{n}",
                    event_id=f"evt-{n}",
                    company_id=company_id,
                    generated_date=T0 if n % 2 else T2,
                    event_type="company.created" if n % 3 else "connection.connected",
                )
                for n, company_id in enumerate(reversed(companies))
            ]
            + [
                new_event("msg-again", event_id="evt-again", company_id=companies[0]),
                new_event("msg-none", event_id="evt-none", company_id=None, outcome="ignored"),
            ]
        )
    pages, after = [], None
    while page := store.matching_companies(after=after, limit=3):
        pages.append(page)
        after = page[-1]
    assert pages == [companies[0:3], companies[3:6], companies[6:]]
    assert store.count_matching() == (9, 7)  # the event of no company is an event, not a company

    criteria = [
        {"since": T1},
        {"event_type": "company.created"},
        {"company_id": companies[0]},
        {"event_or_message_id": "msg-again"},
        {"since": T1, "event_type": "connection.connected"},
    ]
    for selector in criteria:
        found = store.find_events(**selector)  # type: ignore[arg-type]
        ids = sorted({e.company_id for e in found if e.company_id})
        assert store.matching_companies(**selector, limit=100) == ids, selector  # type: ignore[arg-type]
        assert store.count_matching(**selector) == (len(found), len(ids)), selector  # type: ignore[arg-type]
        assert ids, selector
    assert store.matching_companies(since="2999-01-01") == []
    assert store.count_matching(since="2999-01-01") == (0, 0)


def test_open_effects_of_is_each_companys_open_effects(store: Store) -> None:
    with store.transaction():
        first = opened_intent(store, "key-1")
        second = opened_intent(store, "key-2", kind="another_kind")
        closed = opened_intent(store, "key-3", company_id=OTHER)
        store.close_effect(closed, EFFECT_CANCELLED, T1)
        kept = opened_intent(store, "key-4", company_id=OTHER)
    found = store.open_effects_of([COMPANY, OTHER, "nobody"])
    assert [e.id for e in found[COMPANY]] == [first, second]
    assert [e.id for e in found[OTHER]] == [kept]
    assert found["nobody"] == []
    for company_id in (COMPANY, OTHER):
        assert sorted(found[company_id], key=lambda e: e.id) == sorted(
            store.open_effects(company_id), key=lambda e: e.id
        )


def test_commits_elsewhere_changes_with_another_connections_commit_only(
    store: Store, store_url: str
) -> None:
    """What lets a replay trust a plan read outside its write transaction: SQLite tells when
    another connection committed since; PostgreSQL cannot, and says so (None)."""
    reader = open_store(store_url, readonly=True)
    other = open_store(store_url)
    try:
        before = store.commits_elsewhere()
        if store_url.startswith("postgres"):
            assert before is None
            return
        assert before is not None
        with store.transaction():
            store.append_events([new_event("msg-own", event_id="evt-own")])
        assert reader.count_events() == 1  # committed, and seen by others
        with store.transaction():
            assert store.commits_elsewhere() == before  # its own commit does not count
        with other.transaction():
            other.append_events([new_event("msg-other", event_id="evt-other")])
        with store.transaction():
            assert store.commits_elsewhere() != before
        assert reader.commits_elsewhere() is not None
    finally:
        reader.close()
        other.close()

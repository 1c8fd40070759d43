"""The dashboard's reads, on every backend: counts kept by triggers, pages newest first,
search, stuck companies, dead letters, failing and silent syncs, and each one's plan an index
search (never a scan of the table, never a sort)."""

from __future__ import annotations

from typing import Any

import pytest

from store import EFFECT_FAILED, Store
from tests.store.samples import opened_intent

T = "2026-11-{:02d}T10:00:00.0000000Z"


def company(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def data(name: str, *, sync: tuple[str, str] | None = None, checked: str | None = None) -> Any:
    syncs = [{"sync_id": "s", "at": sync[0], "outcome": sync[1]}] if sync else []
    configuration = {"checked_at": checked} if checked else None
    return {"name": name, "syncs": syncs, "configuration": configuration}


def counted(store: Store) -> dict[str, int]:
    """Companies per state, counted the slow way, page by page."""
    counts: dict[str, int] = {}
    after = None
    while True:
        page = store.companies(state=None, limit=100, after=after)
        for row in page.companies:
            counts[row.state] = counts.get(row.state, 0) + 1
        if page.next_after is None:
            return counts
        after = page.next_after


def test_state_counts_follow_every_insert_change_and_delete(store: Store) -> None:
    assert store.state_counts() == {}
    with store.transaction():
        for n in range(6):
            store.save_company(company(n), "pending_auth", data(f"C{n}"), T.format(1))
    assert store.state_counts() == {"pending_auth": 6} == counted(store)
    with store.transaction():
        store.save_company(company(0), "linked", data("C0"), T.format(2))
        store.save_company(company(1), "pending_auth", data("C1 renamed"), T.format(2))
        store.save_companies(
            [(company(2), "ready", data("C2")), (company(3), "linked", data("C3"))], T.format(3)
        )
        store.delete_company_state(company(4))
    assert store.state_counts() == {"pending_auth": 2, "linked": 2, "ready": 1}
    assert store.state_counts() == counted(store)
    with store.transaction():
        store.delete_company_state(company(2))
    # A state with no company left is not listed.
    assert store.state_counts() == {"pending_auth": 2, "linked": 2} == counted(store)


def test_a_rolled_back_change_leaves_the_counts_as_they_were(store: Store) -> None:
    with store.transaction():
        store.save_company(company(1), "pending_auth", data("A"), T.format(1))
    with pytest.raises(RuntimeError), store.transaction():
        store.save_company(company(1), "linked", data("A"), T.format(2))
        store.save_company(company(2), "linked", data("B"), T.format(2))
        raise RuntimeError("undo")
    assert store.state_counts() == {"pending_auth": 1}


def _fill(store: Store) -> None:
    with store.transaction():
        for n in range(1, 21):
            state = "pending_auth" if n % 2 else "ready"
            store.save_company(company(n), state, data(f"Acme {n}"), T.format(n))
        store.save_company(company(30), "ready", data("Zebra Ltd"), T.format(5))
        store.save_company(company(31), "ready", data("zeta plc"), T.format(6))


def test_companies_newest_first_walked_by_keyset(store: Store) -> None:
    _fill(store)
    first = store.companies_newest(state=None, limit=5)
    assert [row.company_id for row in first] == [company(n) for n in (20, 19, 18, 17, 16)]
    last = first[-1]
    second = store.companies_newest(state=None, limit=5, before=(last.updated_at, last.company_id))
    assert [row.company_id for row in second] == [company(n) for n in (15, 14, 13, 12, 11)]
    ready = store.companies_newest(state="ready", limit=3)
    assert [row.company_id for row in ready] == [company(n) for n in (20, 18, 16)]
    # Equal times: the larger id first, and the keyset splits them.
    tied = store.companies_newest(state="ready", limit=100)
    assert [row.company_id for row in tied].index(company(31)) < len(tied)
    at_six = [row.company_id for row in tied if row.updated_at == T.format(6)]
    assert at_six == [company(31), company(6)]
    after = store.companies_newest(state="ready", limit=1, before=(T.format(6), company(31)))
    assert [row.company_id for row in after] == [company(6)]


def test_search_by_id_prefix_then_name_prefix_in_any_case(store: Store) -> None:
    _fill(store)
    by_prefix = store.search_companies("0000001", state=None, limit=50)
    assert [row.company_id for row in by_prefix] == [
        company(n) for n in (16, 17, 18, 19, 20, 30, 31)
    ]
    by_id = store.search_companies(company(7)[:8], state=None, limit=50)
    assert [row.company_id for row in by_id] == [company(7)]
    by_name = store.search_companies("ZE", state=None, limit=50)
    assert [row.data["name"] for row in by_name] == ["Zebra Ltd", "zeta plc"]
    assert (
        store.search_companies("acme 1", state="ready", limit=3)
        == [
            row
            for row in store.search_companies("acme 1", state=None, limit=50)
            if row.state == "ready"
        ][:3]
    )
    assert store.search_companies("nobody", state=None, limit=50) == []


def test_stuck_companies_oldest_first_and_counted_up_to_a_cap(store: Store) -> None:
    _fill(store)
    stuck = store.companies_unchanged_since("pending_auth", T.format(8), limit=10)
    assert [row.company_id for row in stuck] == [company(n) for n in (1, 3, 5, 7)]
    assert store.count_unchanged_since("pending_auth", T.format(8), cap=100) == 4
    assert store.count_unchanged_since("pending_auth", T.format(8), cap=3) == 3
    assert store.count_unchanged_since("linked", T.format(8), cap=100) == 0


def test_failed_commands_latest_first(store: Store) -> None:
    ids = []
    with store.transaction():
        for n in range(3):
            ids.append(opened_intent(store, f"key-{n}", company_id=company(n)))
        opened_intent(store, "key-open", company_id=company(9))
        for n, effect_id in enumerate(ids):
            store.finish_effect(effect_id, status=EFFECT_FAILED, now=T.format(n + 1), error="400")
    found = store.recent_failed_effects(limit=2)
    assert [effect.company_id for effect in found] == [company(2), company(1)]
    assert store.count_failed_effects(cap=100) == 3
    assert store.count_failed_effects(cap=2) == 2


def test_failing_and_silent_syncs(store: Store) -> None:
    with store.transaction():
        # Failing: the newest sync failed, in any state.
        store.save_company(
            company(1), "configured", data("F1", sync=(T.format(3), "failed")), T.format(3)
        )
        store.save_company(
            company(2), "ready", data("F2", sync=(T.format(4), "failed")), T.format(4)
        )
        # Silent: configured, the newest sync (or the configuration) older than the cut.
        store.save_company(
            company(3), "configured", data("S3", sync=(T.format(1), "successful")), T.format(9)
        )
        store.save_company(company(4), "configured", data("S4", checked=T.format(2)), T.format(9))
        # Neither: a recent success, a configured company never read, a failed old one.
        store.save_company(
            company(5), "configured", data("H5", sync=(T.format(8), "successful")), T.format(9)
        )
        store.save_company(company(6), "configured", data("U6"), T.format(9))
        store.save_company(
            company(7), "pending_auth", data("P7", sync=(T.format(1), "successful")), T.format(9)
        )
    failing = store.failing_syncs(limit=10)
    assert [row.company_id for row in failing] == [company(2), company(1)]
    assert store.count_failing_syncs(cap=10) == 2
    silent = store.silent_syncs(T.format(5), limit=10)
    assert [row.company_id for row in silent] == [company(3), company(4)]
    assert store.count_silent_syncs(T.format(5), cap=10) == 2
    assert store.count_silent_syncs(T.format(5), cap=1) == 1
    assert store.count_silent_syncs(T.format(2), cap=10) == 1


def test_every_read_is_an_index_search(store: Store, store_url: str) -> None:
    """The plans, on a store of a few hundred companies: no scan of a table, no sort."""
    with store.transaction():
        store.save_companies(
            [
                (
                    company(n),
                    ("pending_auth", "linked", "ready", "configured")[n % 4],
                    data(f"Name {n}", sync=(T.format(1 + n % 9), ("failed", "successful")[n % 2])),
                )
                for n in range(400)
            ],
            T.format(1),
        )
    postgres = store_url.startswith("postgres")
    if postgres:
        # Tiny tables are cheaper to scan and sort: make the planner show whether an index
        # gives the rows in order (a disabled plan is still taken when there is no other).
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            store.conn.execute(f"SET {setting} = off")  # type: ignore[attr-defined]
    store.plans = []  # type: ignore[attr-defined]
    store.companies_newest(state=None, limit=50)
    store.companies_newest(state="ready", limit=50, before=(T.format(2), company(9)))
    store.search_companies("0000", state=None, limit=50)
    store.search_companies("name 1", state="ready", limit=50)
    store.companies_unchanged_since("pending_auth", T.format(2), limit=50)
    store.count_unchanged_since("pending_auth", T.format(2), cap=1000)
    store.recent_failed_effects(limit=50)
    store.count_failed_effects(cap=1000)
    store.failing_syncs(limit=50)
    store.count_failing_syncs(cap=1000)
    store.silent_syncs(T.format(5), limit=50)
    store.count_silent_syncs(T.format(5), cap=1000)
    plans: list[tuple[str, str]] = store.plans  # type: ignore[attr-defined]
    assert len(plans) == 14
    for sql, plan in plans:
        if postgres:
            assert "Seq Scan" not in plan and "Sort" not in plan, f"{sql}\n{plan}"
        else:
            # (SCAN bounded: the rows of a count's bounded subquery, not of a table.)
            scans = [line for line in plan.splitlines() if line.startswith("SCAN ")]
            scans = [line for line in scans if line != "SCAN bounded"]
            assert all("USING" in line for line in scans), f"{sql}\n{plan}"
            assert "TEMP B-TREE" not in plan, f"{sql}\n{plan}"

"""The store's rate-limit pause and sync check times, run against every backend."""

from __future__ import annotations

import pytest

from store import RateLimitPause, Store
from tests.store.samples import COMPANY, T0, T1, T2, T3, T4, new_event

REACHED, RESET = "client.rateLimit.reached", "client.rateLimit.reset"


def test_no_pause_until_one_is_saved(store: Store) -> None:
    assert store.rate_limit_pause(T0) is None
    assert store.rate_limit_pause() is None


def test_a_pause_holds_until_its_end_and_is_replaced_whole(store: Store) -> None:
    with store.transaction():
        store.save_rate_limit_pause(RateLimitPause(T2, T0, "429 from Codat"), T0)
    assert store.rate_limit_pause(T1) == RateLimitPause(T2, T0, "429 from Codat", None)
    assert store.rate_limit_pause(T2) is None, "a pause ends at its `until`"
    assert store.rate_limit_pause() == RateLimitPause(T2, T0, "429 from Codat", None)
    with store.transaction():
        store.save_rate_limit_pause(RateLimitPause(T4, T1, "client.rateLimit.reached", T1), T1)
    assert store.rate_limit_pause(T3) == RateLimitPause(T4, T1, "client.rateLimit.reached", T1)


def test_a_pause_saved_in_a_rolled_back_transaction_is_not_kept(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.save_rate_limit_pause(RateLimitPause(T2, T0, "429"), T0)
        raise RuntimeError("undo")
    assert store.rate_limit_pause() is None


def test_newest_rate_limit_notice_by_generated_date(store: Store) -> None:
    assert store.newest_rate_limit_notice() is None
    with store.transaction():
        store.append_events(
            [
                new_event(
                    "m-1",
                    event_id="e-1",
                    company_id=None,
                    event_type=REACHED,
                    generated_date=T2,
                    outcome="ignored",
                ),
                new_event(
                    "m-2",
                    event_id="e-2",
                    company_id=None,
                    event_type=RESET,
                    generated_date=T1,
                    outcome="ignored",
                ),
                new_event(
                    "m-3", event_id="e-3", event_type="connection.connected", generated_date=T4
                ),
            ]
        )
    newest = store.newest_rate_limit_notice()
    assert newest is not None and (newest.message_id, newest.event_type) == ("m-1", REACHED)


def test_sync_checks_are_kept_per_company(store: Store) -> None:
    assert store.sync_checks([COMPANY, "other"]) == {}
    with store.transaction():
        store.mark_sync_checked(COMPANY, T0)
        store.mark_sync_checked("other", T1)
    with store.transaction():
        store.mark_sync_checked(COMPANY, T3)
    assert store.sync_checks([COMPANY, "other", "unknown"]) == {COMPANY: T3, "other": T1}
    assert store.sync_checks([]) == {}

"""SIGKILL `serve` in each window of creating the partner expense connection, then restart it.

The windows, in the order the worker goes through them:
  (a) before the call: Codat holds every GET of the accounting connection (the pre-check) past
      serve's 2 s timeout, so the worker cannot get further until the test clears the faults
      after the kill;
  (b) during the call: Codat holds every POST past serve's timeout before it creates anything
      (the stand-in reads the body after the hold, so a client gone meanwhile gets nothing
      created: a 500): the worker sends the POST again and again, under one Idempotency-Key,
      and nothing is created until the faults are cleared after the kill;
  (c) after Codat created the connection, before the processor recorded it (holdAfterCreate),
      with every later listing held past the timeout so the worker cannot adopt it before the
      kill; once with Codat's webhook about the new connection and once without it, so that
      only the restarted worker's look-before-create listing can find (adopt) it;
  (d) right after the processor recorded it, killed as soon as the status document says ready:
      Codat's webhooks are off, so its webhook about the new connection arrives only after the
      restart.
Each test proves from the stand-in's records and the store, read after the kill and before the
restart, that the kill landed in its window. Whatever the window, the company ends ready with
exactly one partner expense connection in Codat, and Codat saw at most one creating POST: any
other POST carried the same Idempotency-Key and was answered from Codat's idempotency cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.transitions import PARTNER_CONNECTION_CREATED
from processor.sandbox.sender import new_message_id
from tests.conftest import Codat
from tests.e2e.load_support import (
    PARTNER_PATH,
    check_posts,
    creating_posts,
    pending_effects,
    quiet_stand_in_errors,
)
from tests.support import (
    API_KEY,
    ServeProcess,
    partner_connections,
    post_webhook,
    wait_for,
)

# SIGKILLs a real process; every crash window on each store backend (see tests/conftest.py).
pytestmark = [pytest.mark.serve_process, pytest.mark.backends("sqlite", "postgres")]
CODAT_TIMEOUT = 2.0  # serve's CODAT_TIMEOUT_SECONDS (tests/support.py)
# Longer than serve's timeout plus its longest backoff (RETRY_MAX_SECONDS 0.5): while such a
# rule lasts, the held requests overlap, and the worker never gets an answer.
PAST_TIMEOUT = CODAT_TIMEOUT + 1.0
HOLD_AFTER_CREATE = CODAT_TIMEOUT + 0.5  # the worker's POST times out: it never sees the answer
POLL = 0.01


@pytest.fixture
def serve(
    tmp_path: Path, codat: Codat, secret: str, serve_port: int, database_url: str
) -> Iterator[ServeProcess]:
    """A real `serve` process, without the reconciliation sweep: what Codat is asked after the
    restart is the worker's doing alone."""
    process = ServeProcess(
        tmp_path / "processor.db",
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
            "RECONCILE_INTERVAL_SECONDS": "0",
        },
        port=serve_port,
        database_url=database_url,
    )
    with process:
        yield process


def requests_to(codat: Codat, method: str, path: str) -> list[dict[str, Any]]:
    return [r for r in codat.state()["requests"] if (r["method"], r["path"]) == (method, path)]


def outstanding(codat: Codat, method: str, path: str) -> list[dict[str, Any]]:
    """The requests Codat has received on `path` and not answered yet."""
    return [r for r in requests_to(codat, method, path) if r["status"] is None]


def accounting_path(ids: dict[str, str]) -> str:
    return f"/companies/{ids['company']}/connections/{ids['connection']}"


def listing_path(ids: dict[str, str]) -> str:
    return f"/companies/{ids['company']}/connections"


@dataclass(frozen=True)
class Stored:
    """What the store held for the company, read after the kill."""

    recorded: list[str]  # ids of partner connections the worker recorded (its command events)
    webhooks: list[str]  # ids of connections Codat's webhooks told of
    effects: list[tuple[str, str | None]]  # (status, note) of each effect


def stored(serve: ServeProcess, ids: dict[str, str]) -> Stored:
    store = serve.open_store()
    try:
        events = store.find_events(company_id=ids["company"])
        effects = store.company_effects(ids["company"])
    finally:
        store.close()
    return Stored(
        [
            str(e.connection_id)
            for e in events
            if e.event_type == PARTNER_CONNECTION_CREATED and e.source == "command"
        ],
        [str(e.connection_id) for e in events if e.source == "webhook" and e.connection_id],
        [(e.status, (e.result or {}).get("note")) for e in effects],
    )


def before_the_call(codat: Codat, serve: ServeProcess, ids: dict[str, str]) -> dict[str, Any]:
    wait_for(
        lambda: requests_to(codat, "GET", accounting_path(ids)),
        timeout=15,
        interval=POLL,
        what="the worker's GET of the accounting connection",
    )
    serve.kill()
    # In the window: a pre-check still unanswered, and the worker never got as far as a POST.
    held = outstanding(codat, "GET", accounting_path(ids))
    assert held, f"no pre-check in flight: {requests_to(codat, 'GET', accounting_path(ids))}"
    assert creating_posts(codat.state(), ids["company"]) == [], "killed too late"
    assert stored(serve, ids).effects == [("pending", None)]
    return {"held": f"GET {held[0]['path']}"}


def during_the_call(codat: Codat, serve: ServeProcess, ids: dict[str, str]) -> dict[str, Any]:
    path = PARTNER_PATH.format(ids["company"])
    wait_for(
        lambda: requests_to(codat, "POST", path),
        timeout=15,
        interval=POLL,
        what="the worker's POST of the partner expense connection",
    )
    serve.kill()
    # In the window: a POST still unanswered, and Codat has created nothing.
    held = outstanding(codat, "POST", path)
    assert held, f"killed with no POST in flight: {requests_to(codat, 'POST', path)}"
    assert partner_connections(codat.state(), ids["company"]) == [], "killed too late"
    assert stored(serve, ids).effects == [("pending", None)]
    keys = {r["idempotencyKey"] for r in requests_to(codat, "POST", path)}
    assert len(keys) == 1, keys
    return {"held": f"POST {held[0]['path']}", "key": held[0]["idempotencyKey"]}


def after_codat_created_it(
    codat: Codat, serve: ServeProcess, ids: dict[str, str]
) -> dict[str, Any]:
    partners = wait_for(
        lambda: partner_connections(codat.state(), ids["company"]),
        timeout=15,
        interval=POLL,
        what="Codat to create the partner expense connection",
    )
    serve.kill()
    # In the window: Codat created it and still holds its answer; the worker recorded nothing
    # (Codat's webhook about it, when on, may have been stored, and the effect cancelled).
    path = PARTNER_PATH.format(ids["company"])
    assert [r["status"] for r in requests_to(codat, "POST", path)] == [None], "killed too late"
    found = stored(serve, ids)
    assert found.recorded == [], found
    assert found.effects in ([("pending", None)], [("cancelled", None)]), found
    if partners[0]["id"] not in found.webhooks:
        assert found.effects == [("pending", None)], found
    return {"created": partners[0]["id"]}


def right_after_recording(codat: Codat, serve: ServeProcess, ids: dict[str, str]) -> dict[str, Any]:
    def recorded() -> dict[str, Any]:
        document = serve.company(ids["company"])
        return document if document and document["state"] == "ready" else {}

    document = wait_for(recorded, timeout=15, interval=POLL, what="the status document: ready")
    serve.kill()
    # In the window: the worker recorded the connection Codat created, and Codat's webhook
    # about it has not been delivered (they are off) nor stored.
    [partner] = partner_connections(codat.state(), ids["company"])
    found = stored(serve, ids)
    assert found.recorded == [partner["id"]], found
    assert found.effects == [("done", "created")], found
    assert partner["id"] not in found.webhooks, found
    return {"expense": document["expenseConnection"]}


@dataclass(frozen=True)
class Window:
    """Where to kill: the fault rules that open the window, and how to wait for it."""

    rules: Callable[[dict[str, str]], list[dict[str, Any]]]
    kill: Callable[[Codat, ServeProcess, dict[str, str]], dict[str, Any]]
    # False: Codat's webhooks are not delivered (the test sends the company's first three
    # itself), so after the restart only the worker's own listing can find a connection.
    webhooks: bool = True
    # How the effect ends after the restart: (status, note), or None for either way.
    effect: tuple[str, str] | None = ("done", "created")


def hold_get(ids: dict[str, str]) -> list[dict[str, Any]]:
    return [{"method": "GET", "path": accounting_path(ids), "delay": PAST_TIMEOUT, "times": 100}]


def hold_post(ids: dict[str, str]) -> list[dict[str, Any]]:
    path = PARTNER_PATH.format(ids["company"])
    return [{"method": "POST", "path": path, "delay": PAST_TIMEOUT, "times": 100}]


def hold_after_create(ids: dict[str, str]) -> list[dict[str, Any]]:
    path = PARTNER_PATH.format(ids["company"])
    listing = listing_path(ids)
    return [
        {"method": "POST", "path": path, "holdAfterCreate": HOLD_AFTER_CREATE, "times": 1},
        # The look-before-create listing goes through untouched; every later one (the retry
        # after the POST timed out) is held past the timeout, so nothing is adopted.
        {"method": "GET", "path": listing, "times": 1},
        {"method": "GET", "path": listing, "delay": PAST_TIMEOUT, "times": 100},
    ]


WINDOWS = {
    "a-before-the-call": Window(hold_get, before_the_call),
    "b-during-the-call": Window(hold_post, during_the_call),
    # Codat's webhook or the restarted worker's listing finds it first: adopted or cancelled.
    "c-after-codat-created-it": Window(hold_after_create, after_codat_created_it, effect=None),
    "c-after-codat-created-it-no-webhook": Window(
        hold_after_create, after_codat_created_it, webhooks=False, effect=("done", "adopted")
    ),
    "d-right-after-recording": Window(lambda ids: [], right_after_recording, webhooks=False),
}


def send_stand_in_events(codat: Codat, serve: ServeProcess, secret: str, skip: int) -> list[str]:
    """Deliver the webhooks the stand-in generated (its own delivery is off), after `skip`."""
    bodies = codat.state()["events"][skip:]
    for body in bodies:
        answer = post_webhook(serve.url, body, secret, message_id=new_message_id())
        assert answer.status_code == 200, answer.text
    return [body["eventType"] for body in bodies]


@pytest.mark.parametrize("name", list(WINDOWS))
def test_sigkill_in_each_window_of_the_partner_connection_gives_exactly_one(
    codat: Codat, serve: ServeProcess, secret: str, name: str
) -> None:
    window = WINDOWS[name]
    if not window.webhooks:
        codat.admin("POST", "/config", json={"autoWebhooks": False})
    company = codat.create_company(f"Crash Window {name[0].upper()}")
    connection = codat.create_connection(company["id"])
    ids = {"company": company["id"], "connection": connection["id"]}
    if window.webhooks:
        wait_for(lambda: serve.state_of(ids["company"]) == "pending_auth", what="pending_auth")
    codat.faults(window.rules(ids))
    codat.authorize(ids["company"], ids["connection"])
    if not window.webhooks:
        assert send_stand_in_events(codat, serve, secret, 0) == [
            "company.created",
            "connection.created",
            "connection.connected",
        ]

    with quiet_stand_in_errors():
        seen = window.kill(codat, serve, ids)
        killed_at = time.monotonic()
        codat.admin("DELETE", "/faults")  # Codat answers at full speed again
        serve.start()
        if name.startswith("d"):
            # What was committed before the kill is still there, straight after the restart.
            document = serve.company(ids["company"])
            assert document is not None and document["state"] == "ready", document
            assert document["expenseConnection"] == seen["expense"]
            # Codat's webhook about the new connection arrives late, and changes nothing.
            assert send_stand_in_events(codat, serve, secret, 3) == ["connection.created"]
        document = serve.wait_state(ids["company"], "ready", timeout=40)
        recovered = time.monotonic() - killed_at

        # Let Codat finish every request it still holds, so what it did is all in its log.
        wait_for(
            lambda: not [r for r in codat.state()["requests"] if r["status"] is None],
            timeout=15,
            what="Codat to answer every request",
        )
    state = codat.state()
    partners = partner_connections(state, ids["company"])
    assert len(partners) == 1, partners
    assert document["expenseConnection"]["id"] == partners[0]["id"]
    assert document["accountingConnection"]["status"] == "Linked"
    assert document["failed"] == [] and document["pending"] == []
    if "created" in seen:
        assert partners[0]["id"] == seen["created"]
    if "expense" in seen:
        assert partners[0]["id"] == seen["expense"]["id"]
    if "key" in seen:
        assert {post["idempotencyKey"] for post in creating_posts(state, ids["company"])} == {
            seen["key"]
        }

    created, replayed = check_posts(state, ids["company"])
    posts = creating_posts(state, ids["company"])
    assert created == 1, posts
    answered = [post["status"] for post in posts]
    # Every POST came from the one recorded intent: the same Idempotency-Key throughout.
    assert len({post["idempotencyKey"] for post in posts}) == 1, posts
    if name.startswith("c"):
        # The restarted worker created nothing: the only POST is the one Codat held.
        assert len(posts) == 1, posts

    store = serve.open_store()
    try:
        connected = store.find_events(company_id=ids["company"], event_type="connection.connected")
        assert len(connected) == 1 and connected[0].outcome == "applied"
        assert store.count_events(pending=True) == 0
        assert pending_effects(store) == 0
        effects = store.company_effects(ids["company"])
        assert len(effects) == 1, effects
        assert effects[0].status in ("done", "cancelled"), effects
    finally:
        store.close()
    ended = (effects[0].status, (effects[0].result or {}).get("note"))
    if window.effect is not None:
        assert ended == window.effect, effects
    print(
        f"\nwindow {name}: killed with {seen}; ready again {recovered:.1f} s after the kill; "
        f"{len(posts)} POST(s) answered {answered} ({created} creating, {replayed} replayed), "
        f"effect {ended} after {effects[0].attempts} recorded attempt(s)"
    )

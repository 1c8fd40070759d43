"""SIGKILL `serve` in each window of creating the partner expense connection, then restart it.

The windows, in the order the worker goes through them:
  (a) before the call: Codat holds the GET of the accounting connection (the pre-check);
  (b) during the call: Codat holds the POST before it creates anything (the stand-in reads
      the body after the hold, so a client killed meanwhile gets nothing created: a 500);
  (c) after Codat created the connection, before the processor recorded it (holdAfterCreate),
      once with Codat's webhook about the new connection and once without it, so that only
      the restarted worker's look-before-create listing can find it;
  (d) right after the processor recorded it: killed as soon as the status document says ready.
Whatever the window, the company ends ready with exactly one partner expense connection in Codat,
and Codat saw at most one creating POST: any other POST carried the same Idempotency-Key and was
answered from Codat's idempotency cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from processor.sender import new_message_id
from store import Store
from tests.conftest import Codat
from tests.load_support import (
    PARTNER_PATH,
    check_posts,
    creating_posts,
    pending_effects,
    quiet_stand_in_errors,
)
from tests.support import ServeProcess, partner_connections, post_webhook, wait_for

pytestmark = pytest.mark.serve_process
HOLD = 1.5  # seconds Codat holds a request: less than serve's 2 s client timeout
POLL = 0.01


def outstanding(codat: Codat, method: str, path: str) -> dict[str, Any]:
    """The request Codat has received on `path` and not answered yet, or {}."""
    for request in codat.state()["requests"]:
        if request["method"] == method and request["path"] == path and request["status"] is None:
            return dict(request)
    return {}


def before_the_call(codat: Codat, serve: ServeProcess, ids: dict[str, str]) -> dict[str, Any]:
    path = f"/companies/{ids['company']}/connections/{ids['connection']}"
    request = wait_for(
        lambda: outstanding(codat, "GET", path),
        timeout=10,
        interval=POLL,
        what="the worker's GET of the accounting connection",
    )
    serve.kill()
    assert creating_posts(codat.state(), ids["company"]) == [], "killed too late"
    return {"held": f"GET {request['path']}"}


def during_the_call(codat: Codat, serve: ServeProcess, ids: dict[str, str]) -> dict[str, Any]:
    request = wait_for(
        lambda: outstanding(codat, "POST", PARTNER_PATH.format(ids["company"])),
        timeout=10,
        interval=POLL,
        what="the worker's POST of the partner expense connection",
    )
    serve.kill()
    return {"held": f"POST {request['path']}", "key": request["idempotencyKey"]}


def after_codat_created_it(
    codat: Codat, serve: ServeProcess, ids: dict[str, str]
) -> dict[str, Any]:
    partners = wait_for(
        lambda: partner_connections(codat.state(), ids["company"]),
        timeout=10,
        interval=POLL,
        what="Codat to create the partner expense connection",
    )
    serve.kill()  # Codat holds its answer: the processor has recorded nothing yet
    return {"created": partners[0]["id"]}


def right_after_recording(codat: Codat, serve: ServeProcess, ids: dict[str, str]) -> dict[str, Any]:
    def recorded() -> dict[str, Any]:
        document = serve.company(ids["company"])
        return document if document and document["state"] == "ready" else {}

    document = wait_for(recorded, timeout=10, interval=POLL, what="the status document: ready")
    serve.kill()
    return {"expense": document["expenseConnection"]}


@dataclass(frozen=True)
class Window:
    """Where to kill: the fault rules that open the window, and how to wait for it."""

    rules: Callable[[dict[str, str]], list[dict[str, Any]]]
    kill: Callable[[Codat, ServeProcess, dict[str, str]], dict[str, Any]]
    # False: Codat's webhooks are not delivered (the test sends the company's first three
    # itself), so after the restart only the worker's own listing can find a connection.
    webhooks: bool = True


def hold_get(ids: dict[str, str]) -> list[dict[str, Any]]:
    path = f"/companies/{ids['company']}/connections/{ids['connection']}"
    return [{"method": "GET", "path": path, "delay": HOLD, "times": 1}]


def hold_post(ids: dict[str, str]) -> list[dict[str, Any]]:
    path = PARTNER_PATH.format(ids["company"])
    return [{"method": "POST", "path": path, "delay": HOLD, "times": 1}]


def hold_after_create(ids: dict[str, str]) -> list[dict[str, Any]]:
    path = PARTNER_PATH.format(ids["company"])
    return [{"method": "POST", "path": path, "holdAfterCreate": 5.0, "times": 1}]


WINDOWS = {
    "a-before-the-call": Window(hold_get, before_the_call),
    "b-during-the-call": Window(hold_post, during_the_call),
    "c-after-codat-created-it": Window(hold_after_create, after_codat_created_it),
    "c-after-codat-created-it-no-webhook": Window(
        hold_after_create, after_codat_created_it, webhooks=False
    ),
    "d-right-after-recording": Window(lambda ids: [], right_after_recording),
}


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
        bodies = codat.state()["events"]
        assert [b["eventType"] for b in bodies] == [
            "company.created",
            "connection.created",
            "connection.connected",
        ]
        for body in bodies:
            answer = post_webhook(serve.url, body, secret, message_id=new_message_id())
            assert answer.status_code == 200, answer.text

    with quiet_stand_in_errors():
        seen = window.kill(codat, serve, ids)
        killed_at = time.monotonic()
        serve.start()
        if name.startswith("d"):
            # What was committed before the kill is still there, straight after the restart.
            document = serve.company(ids["company"])
            assert document is not None and document["state"] == "ready", document
            assert document["expenseConnection"] == seen["expense"]
        document = serve.wait_state(ids["company"], "ready", timeout=40)
        recovered = time.monotonic() - killed_at

        # Let Codat finish any request it still holds, so what it did is all in its log.
        wait_for(
            lambda: not outstanding(codat, "POST", PARTNER_PATH.format(ids["company"])),
            timeout=10,
            what="Codat to answer every POST",
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

    store = Store.open(serve.database, readonly=True)
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
    print(
        f"\nwindow {name}: killed with {seen}; ready again {recovered:.1f} s after the kill; "
        f"{len(posts)} POST(s) answered {answered} ({created} creating, {replayed} replayed), "
        f"effect {effects[0].status} after {effects[0].attempts} recorded attempt(s) "
        f"({(effects[0].result or {}).get('note')})"
    )

"""Onboarding scenarios end to end: duplicates, disorder, relinking, legacy bodies, Codat faults.

Every test runs the real `serve` app (in a thread: the `serve` fixture) against the stand-in for
Codat over loopback HTTP, and checks the outcome in both places: the processor's status document
and Codat's connections. Killing `serve` in each window of the partner connection's creation is
tests/e2e/test_crash_windows.py's part.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from handlers.state import CompanyState
from processor import clock
from processor.sandbox.webhook_bodies import connection_event, new_connection
from processor.work.folding import rebuild
from tests.conftest import Codat
from tests.support import Serve, partner_connections, post_webhook, wait_for

# Every scenario on each store backend: the same processor on SQLite and on PostgreSQL.
pytestmark = pytest.mark.backends("sqlite", "postgres")


def linked_company(codat: Codat, serve: Serve, name: str = "Sawayn Group") -> dict[str, Any]:
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.authorize(company["id"], connection["id"])
    return {"company": company, "connection": connection}


def events_for(codat: Codat, company_id: str) -> list[dict[str, Any]]:
    """The webhook bodies the stand-in generated for a company, in order."""
    found = []
    for body in codat.state()["events"]:
        payload = body.get("payload", {})
        owner = payload.get("referenceCompany", {}).get("id") or payload.get("id")
        if owner == company_id or body.get("CompanyId") == company_id:
            found.append(body)
    return found


def test_the_same_message_five_times_concurrently_gives_one_connection(
    codat: Codat, serve: Serve, secret: str
) -> None:
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    company = codat.create_company("Duplicates Ltd")
    connection = codat.create_connection(company["id"])
    codat.authorize(company["id"], connection["id"])
    bodies = events_for(codat, company["id"])
    assert [b["eventType"] for b in bodies] == [
        "company.created",
        "connection.created",
        "connection.connected",
    ]
    for body in bodies[:2]:
        assert post_webhook(
            serve.url, body, secret, message_id=f"msg_{uuid.uuid4().hex}"
        ).is_success
    message_id = f"msg_{uuid.uuid4().hex}"
    with ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(
                lambda _: post_webhook(serve.url, bodies[2], secret, message_id=message_id),
                range(5),
            )
        )
    assert [a.status_code for a in answers] == [200] * 5
    document = serve.wait_state(company["id"], "ready")
    connected = [e for e in document["events"] if e["messageId"] == message_id]
    assert len(connected) == 1
    assert connected[0]["deliveries"] == 5
    assert len(partner_connections(codat.state(), company["id"])) == 1


def test_connected_before_created_still_ends_ready(codat: Codat, serve: Serve, secret: str) -> None:
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    company = codat.create_company("Out Of Order plc")
    connection = codat.create_connection(company["id"])
    codat.authorize(company["id"], connection["id"])
    bodies = events_for(codat, company["id"])
    for body in reversed(bodies):  # connected, then connection.created, then company.created
        answer = post_webhook(serve.url, body, secret, message_id=f"msg_{uuid.uuid4().hex}")
        assert answer.status_code == 200
    document = serve.wait_state(company["id"], "ready")
    assert document["name"] == "Out Of Order plc"
    assert document["accountingConnection"]["status"] == "Linked"
    assert len(partner_connections(codat.state(), company["id"])) == 1
    outcomes = {
        e["eventType"]: e["outcome"] for e in document["events"] if e["source"] == "webhook"
    }
    # connection.created is older than the connected event already applied: recorded as stale.
    assert outcomes["connection.created"] == "stale"


def test_disconnect_then_reconnect_ends_ready_with_still_one_partner_connection(
    codat: Codat, serve: Serve
) -> None:
    ids = linked_company(codat, serve, "Relink Co")
    company_id, connection_id = ids["company"]["id"], ids["connection"]["id"]
    serve.wait_state(company_id, "ready")
    unlinked = codat.http.patch(
        f"/companies/{company_id}/connections/{connection_id}", json={"status": "Unlinked"}
    )
    assert unlinked.status_code == 200, unlinked.text
    document = serve.wait_state(company_id, "disconnected")
    assert document["accountingConnection"]["status"] == "Unlinked"
    codat.authorize(company_id, connection_id)
    document = serve.wait_state(company_id, "ready")
    types = [e["eventType"] for e in document["events"] if e["source"] == "webhook"]
    assert "connection.disconnected" in types and "connection.reconnected" in types
    assert len(partner_connections(codat.state(), company_id)) == 1
    created = [
        e for e in document["events"] if e["eventType"] == "partnerExpenseConnection.created"
    ]
    assert len(created) == 1


def test_deauthorized_connection_is_disconnected(codat: Codat, serve: Serve) -> None:
    ids = linked_company(codat, serve, "Expired Token Ltd")
    company_id, connection_id = ids["company"]["id"], ids["connection"]["id"]
    serve.wait_state(company_id, "ready")
    codat.admin("POST", f"/companies/{company_id}/connections/{connection_id}/deauthorize")
    document = serve.wait_state(company_id, "disconnected")
    assert document["accountingConnection"]["status"] == "Deauthorized"


def test_failed_authorization_stays_pending_auth_with_last_error(
    codat: Codat, serve: Serve
) -> None:
    company = codat.create_company("Cancelled Link")
    connection = codat.create_connection(company["id"])
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.admin(
        "POST",
        f"/companies/{company['id']}/connections/{connection['id']}/fail",
        json={"errorMessage": "The user cancelled the authorization."},
    )

    def failed() -> dict[str, Any] | None:
        document = serve.company(company["id"])
        return document if document and document["lastError"] else None

    document = wait_for(failed, what="lastError")
    assert document["state"] == "pending_auth"
    assert "cancelled" in document["lastError"]["message"]
    assert partner_connections(codat.state(), company["id"]) == []


def test_legacy_bodies_reach_ready(codat: Codat, serve: Serve) -> None:
    company = codat.create_company("Legacy Rules Ltd")
    codat.admin("POST", f"/companies/{company['id']}/legacy", json={"legacy": True})
    connection = codat.create_connection(company["id"], "qhyg")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.authorize(company["id"], connection["id"])
    document = serve.wait_state(company["id"], "ready")
    legacy = [e for e in document["events"] if e["format"] == "legacy"]
    # The accounting connection's two changes, then the partner connection appearing Linked.
    assert [e["eventType"] for e in legacy] == [
        "connection.created",
        "connection.connected",
        "connection.created",
    ]
    assert document["accountingConnection"]["platformKey"] == "qhyg"
    assert len(partner_connections(codat.state(), company["id"])) == 1


# The test invents an Expense connection Codat does not have: the reconciliation sweep would
# rightly replace it with what Codat says.
@pytest.mark.serve_env(RECONCILE_INTERVAL_SECONDS="0")
def test_expense_connection_events_never_create_another(
    codat: Codat, serve: Serve, secret: str
) -> None:
    ids = linked_company(codat, serve, "Expense Events Inc")
    company = ids["company"]
    serve.wait_state(company["id"], "ready")
    partner = partner_connections(codat.state(), company["id"])[0]

    def announced() -> dict[str, Any] | None:
        """The document once Codat's own webhook about the partner connection is folded."""
        document = serve.company(company["id"])
        assert document is not None
        webhooks = [
            e
            for e in document["events"]
            if e["connectionId"] == partner["id"] and e["source"] == "webhook"
        ]
        return document if webhooks and webhooks[-1]["outcome"] != "pending" else None

    # Codat's own connection.created for the partner connection arrives and changes nothing.
    document = wait_for(announced, what="the stand-in's webhook about the partner connection")
    assert document["state"] == "ready"
    # More events about an Expense connection, even "connected", create nothing.
    other = new_connection(
        company["id"],
        "expn",
        platform_name="Partner Expense",
        source_type="Expense",
        status="Linked",
    )
    sent = []
    for event_type in ("connection.connected", "connection.reconnected", "connection.created"):
        body = connection_event(event_type, company, other)
        sent.append(f"msg_{uuid.uuid4().hex}")
        assert post_webhook(serve.url, body, secret, message_id=sent[-1]).is_success

    def folded() -> dict[str, Any] | None:
        """The document once all three are folded, and any command they asked for is done."""
        document = serve.company(company["id"])
        assert document is not None
        outcomes = {e["messageId"]: e["outcome"] for e in document["events"]}
        if any(outcomes.get(m, "pending") == "pending" for m in sent) or document["pending"]:
            return None
        return document

    document = wait_for(folded, what="the three Expense events to be folded")
    assert document["state"] == "ready" and document["pendingEvents"] == 0
    assert document["expenseConnection"]["id"] == other["id"]
    assert document["pending"] == []
    assert len(partner_connections(codat.state(), company["id"])) == 1
    requests = [
        r
        for r in codat.state()["requests"]
        if r["method"] == "POST"
        and r["path"].endswith("/partnerExpense")
        and company["id"] in r["path"]
    ]
    assert len(requests) == 1


def test_codat_503_three_times_then_success_reaches_ready(codat: Codat, serve: Serve) -> None:
    codat.faults(
        [
            {
                "method": "POST",
                "path": "/companies/*/sync/expenses/connections/partnerExpense",
                "status": 503,
                "times": 3,
            }
        ]
    )
    ids = linked_company(codat, serve, "Maintenance Window")
    document = serve.wait_state(ids["company"]["id"], "ready")
    assert len(partner_connections(codat.state(), ids["company"]["id"])) == 1
    posts = [
        r
        for r in codat.state()["requests"]
        if r["method"] == "POST" and r["path"].endswith("/partnerExpense")
    ]
    assert [r["status"] for r in posts] == [503, 503, 503, 200]
    # One intent, one Idempotency-Key across every retry.
    assert len({r["idempotencyKey"] for r in posts}) == 1
    assert document["lastError"] is None or "503" in document["lastError"]["message"]


def test_codat_429_with_retry_after_is_honoured(codat: Codat, serve: Serve) -> None:
    codat.faults(
        [
            {
                "method": "POST",
                "path": "/companies/*/sync/expenses/connections/partnerExpense",
                "status": 429,
                "times": 1,
                "retryAfter": "1",
            }
        ]
    )
    ids = linked_company(codat, serve, "Rate Limited")
    company_id = ids["company"]["id"]

    def pending_with_error() -> dict[str, Any] | None:
        document = serve.company(company_id)
        pending = document["pending"] if document else []
        return pending[0] if pending and pending[0]["lastError"] else None

    pending = wait_for(pending_with_error, what="a pending command with its error")
    assert pending["attempts"] == 1 and "429" in pending["lastError"]
    assert pending["nextAttemptAt"] is not None
    serve.wait_state(company_id, "ready")
    posts = [
        r
        for r in codat.state()["requests"]
        if r["method"] == "POST" and r["path"].endswith("/partnerExpense")
    ]
    assert [r["status"] for r in posts] == [429, 200]
    # The retry was scheduled no sooner than Retry-After said (the backoff alone is 0.05 s).
    waited = clock.parse(pending["nextAttemptAt"]) - clock.parse(pending["updatedAt"])
    assert waited.total_seconds() >= 0.95


def test_codat_400_shows_in_last_error(codat: Codat, serve: Serve) -> None:
    codat.faults(
        [
            {
                "method": "POST",
                "path": "/companies/*/sync/expenses/connections/partnerExpense",
                "status": 400,
                "times": 1,
            }
        ]
    )
    ids = linked_company(codat, serve, "Bad Request")
    company_id = ids["company"]["id"]

    def failed() -> dict[str, Any] | None:
        document = serve.company(company_id)
        return document if document and document["failed"] else None

    document = wait_for(failed, what="the command to fail")
    assert document["state"] == "linked"
    assert "400" in document["lastError"]["message"]
    assert document["failed"][0]["attempts"] == 1
    assert partner_connections(codat.state(), company_id) == []


def test_rebuild_from_the_log_equals_live_state(codat: Codat, serve: Serve) -> None:
    ready = linked_company(codat, serve, "Rebuild One")["company"]["id"]
    relinked = linked_company(codat, serve, "Rebuild Two")
    serve.wait_state(ready, "ready")
    serve.wait_state(relinked["company"]["id"], "ready")
    httpx.patch(
        f"{codat.url}/companies/{relinked['company']['id']}/connections/"
        f"{relinked['connection']['id']}",
        json={"status": "Unlinked"},
        headers=codat.http.headers,
    ).raise_for_status()
    serve.wait_state(relinked["company"]["id"], "disconnected")
    pending = codat.create_company("Rebuild Three")
    codat.create_connection(pending["id"])
    wait_for(lambda: serve.state_of(pending["id"]) == "pending_auth", what="pending_auth")
    serve.stop()
    store = serve.open_store(readonly=False)
    try:
        ids = store.company_ids()
        assert len(ids) == 3
        for company_id in ids:
            live = store.company(company_id)
            assert live is not None
            with store.transaction():
                report = rebuild(store, company_id, clock.now())
            rebuilt = store.company(company_id)
            assert rebuilt is not None
            assert CompanyState.from_dict(rebuilt.data) == CompanyState.from_dict(live.data)
            assert report.commands == []  # nothing left to do for any of them
    finally:
        store.close()

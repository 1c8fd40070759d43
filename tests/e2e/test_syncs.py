"""Expense syncs (issue 14) over real HTTP: Codat's sync webhooks, signed, to a running `serve`;
the status document and `codat-expenses syncs` on the same store."""

from __future__ import annotations

from typing import Any

import pytest

from processor.sandbox.sender import new_message_id
from processor.sandbox.webhook_bodies import legacy_sync_event, sync_event
from tests.cli_support import Cli
from tests.conftest import Codat
from tests.support import Serve, post_webhook, wait_for

pytestmark = [
    pytest.mark.backends("sqlite", "postgres"),
    pytest.mark.serve_env(RECONCILE_INTERVAL_SECONDS="0"),
]
FAILING: list[dict[str, Any]] = [
    {"id": "t-1", "status": "Completed", "errorMessage": None},
    {"id": "t-2", "status": "Failed", "errorMessage": "Supplier is archived in Xero"},
    {"id": "t-3", "status": "PushError", "errorMessage": "Bank account closed"},
]


FETCHED = [{"id": "t-9", "status": "ValidationError", "message": "Tax code missing"}]


def fetched(cli: Cli, company_id: str) -> list[dict[str, Any]] | None:
    """sync-0's transactions as `syncs --json` lists them (None: not listed yet)."""
    listed = cli.ok("syncs", company_id, "--json").json()
    found: list[dict[str, Any]] | None = next(
        entry["transactions"] for entry in listed["syncs"] if entry["sync"]["syncId"] == "sync-0"
    )
    return found


@pytest.fixture
def cli(serve: Serve, codat: Codat) -> Cli:
    return Cli.beside(serve, codat.url)


def send(serve: Serve, secret: str, body: dict[str, Any], message_id: str | None = None) -> None:
    answer = post_webhook(serve.url, body, secret, message_id=message_id or new_message_id())
    assert answer.status_code == 200, answer.text


def test_syncs_out_of_order_twice_and_legacy_before_configuration(
    codat: Codat, serve: Serve, cli: Cli, secret: str
) -> None:
    onboarded = cli.onboard("Syncing Ltd")
    company_id = onboarded["companyId"]
    [company] = [c for c in codat.state()["companies"] if c["id"] == company_id]
    ok = sync_event(
        "expenses.sync.successful",
        company,
        "sync-1",
        FAILING[:1],
        generated_date="2026-12-01T09:00:00Z",
    )
    failed = sync_event(
        "expenses.sync.unsuccessful",
        company,
        "sync-2",
        FAILING,
        generated_date="2026-12-01T10:02:00Z",
    )
    # The failure first, then the older success; the failure again under another message id.
    send(serve, secret, failed)
    send(serve, secret, ok)
    send(serve, secret, failed)
    # And a legacy Sync Failed (no transactions, a failure stage), of a sync Codat knows: its
    # transactions are fetched from Codat.
    scripted = codat.admin(
        "POST",
        f"/companies/{company_id}/syncs",
        json={"syncId": "sync-0", "transactions": FETCHED, "webhook": "none"},
    )
    assert scripted["webhook"] is None
    send(serve, secret, legacy_sync_event(company, "sync-0", failure_stage="Pushing"))

    def folded() -> dict[str, Any]:
        document = serve.company(company_id) or {}
        return document if document.get("pendingEvents") == 0 else {}

    wait_for(lambda: len((folded().get("sync") or {}).get("latest") or {}) > 0, what="syncs")
    document = folded()
    sync = document["sync"]
    # Not configured yet: no verdict, but the syncs are recorded.
    assert document["state"] == "pending_auth"
    assert sync["latest"]["syncId"] in ("sync-0", "sync-2")
    assert sync["lastSuccessfulAt"] == "2026-12-01T09:00:00.0000000Z"
    outcomes = [
        e["outcome"]
        for e in document["events"]
        if e["eventType"].startswith("expenses.") and e["source"] == "webhook"
    ]
    assert sorted(outcomes) == ["applied", "applied", "applied", "duplicate"]

    listed = cli.ok("syncs", company_id, "--json").json()
    by_id = {entry["sync"]["syncId"]: entry for entry in listed["syncs"]}
    assert sorted(by_id) == ["sync-0", "sync-1", "sync-2"]
    ats = [entry["sync"]["at"] for entry in listed["syncs"]]
    assert ats == sorted(ats, reverse=True)
    failing = by_id["sync-2"]
    assert (failing["sync"]["failingCount"], failing["sync"]["transactionCount"]) == (2, 3)
    assert [t["errorMessage"] for t in failing["transactions"]][1:] == [
        "Supplier is archived in Xero",
        "Bank account closed",
    ]
    legacy = by_id["sync-0"]
    assert legacy["sync"]["failureStage"] == "Pushing"
    wait_for(lambda: fetched(cli, company_id) is not None, what="sync-0's transactions fetched")
    assert fetched(cli, company_id) == [
        {"id": "t-9", "status": "ValidationError", "errorMessage": "Tax code missing"}
    ]
    [asked] = [
        r for r in codat.state()["requests"] if r["path"].endswith("/syncs/sync-0/transactions")
    ]
    assert asked["status"] == 200
    wait_for(lambda: folded().get("pending") == [], what="nothing left to do")
    sync = folded()["sync"]
    listed = cli.ok("syncs", company_id, "--json").json()
    table = cli.ok("syncs", company_id).stdout
    assert "Supplier is archived in Xero" in table and "Tax code missing" in table

    # Replay rebuilds the same syncs.
    cli.ok("replay", "--company", company_id)
    wait_for(lambda: folded().get("sync") == sync, what="the same syncs after replay")
    assert cli.ok("syncs", company_id, "--json").json() == listed

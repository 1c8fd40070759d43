"""Expense syncs (issue 14) over real HTTP: Codat's sync webhooks, signed, to a running `serve`;
the status document and `codat-expenses syncs` on the same store."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from processor import clock
from processor.sandbox.sender import new_message_id
from processor.sandbox.webhook_bodies import legacy_sync_event, sync_event
from tests.cli_support import Cli, requests_to
from tests.conftest import Codat
from tests.e2e.test_configuration import awaiting, options_over_http
from tests.support import TOKEN, Serve, post_webhook, wait_for

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


# --- Syncs scripted in the stand-in, delivered by it: Codat's side of the story -------------


def configured(codat: Codat, serve: Serve, cli: Cli, name: str) -> str:
    """A company onboarded to `configured` through the command line; its id."""
    company = awaiting(codat, serve, cli, name)
    company_id = str(company["companyId"])
    served = options_over_http(serve, company_id).json()
    cli.ok(
        "configure",
        company_id,
        "--bank-account",
        served["bankAccounts"][0]["id"],
        "--supplier",
        served["suppliers"][0]["id"],
        "--customer",
        served["customers"][0]["id"],
    )
    serve.wait_state(company_id, "configured")
    return company_id


def scripted(codat: Codat, company_id: str, **sync: Any) -> str:
    """A sync recorded in the stand-in, which sends its webhook (or none); its id."""
    answer = codat.admin("POST", f"/companies/{company_id}/syncs", json=sync)
    return str(answer["sync"]["syncId"])


def sync_of(serve: Serve, company_id: str) -> dict[str, Any]:
    document = serve.company(company_id) or {}
    if document.get("pendingEvents") or document.get("pending"):
        return {}  # not settled yet
    return dict(document.get("sync") or {})


def metric(serve: Serve, line_start: str) -> float:
    answer = httpx.get(
        f"{serve.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    found = [line for line in answer.text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_a_successful_then_a_failing_sync_from_codat(codat: Codat, serve: Serve, cli: Cli) -> None:
    company_id = configured(codat, serve, cli, "Daily Life Ltd")
    good = scripted(codat, company_id, transactions=[{"id": "t-0", "status": "Completed"}])
    wait_for(
        lambda: (sync_of(serve, company_id).get("latest") or {}).get("syncId") == good,
        what="the successful sync",
    )
    assert sync_of(serve, company_id)["health"] == "healthy"
    bad = scripted(
        codat,
        company_id,
        transactions=[
            {"id": "t-1", "status": "Completed"},
            {"id": "t-2", "status": "ValidationError", "message": "Supplier is archived in Xero"},
        ],
    )
    wait_for(lambda: sync_of(serve, company_id).get("health") == "failing", what="failing")
    sync = sync_of(serve, company_id)
    assert sync["latest"]["syncId"] == bad and sync["previousOutcome"] == "successful"
    assert sync["failingTransactions"] == [
        {"id": "t-2", "status": "Failed", "errorMessage": "Supplier is archived in Xero"}
    ]
    status = cli.ok("status", company_id).stdout
    assert "failed for 1 of 2 transactions" in status and "Supplier is archived" in status
    assert metric(serve, 'codat_expenses_expense_syncs_total{outcome="failed"}') == 1.0
    assert metric(serve, 'codat_expenses_expense_syncs_total{outcome="successful"}') == 1.0
    assert metric(serve, "codat_expenses_sync_failing_transactions_total") == 1.0
    lines = [line for line in serve.logs().splitlines() if bad in line]
    assert any(company_id in line and "failed" in line for line in lines), lines
    # Nothing fetched: the webhooks listed the transactions.
    assert not [r for r in codat.state()["requests"] if r["path"].endswith("/transactions")]


@pytest.mark.parametrize("webhook", ["legacy", "current"])
def test_a_failing_sync_without_transactions_has_them_fetched(
    codat: Codat, serve: Serve, cli: Cli, webhook: str
) -> None:
    company_id = configured(codat, serve, cli, f"Unlisted {webhook.title()} Ltd")
    sync_id = scripted(
        codat,
        company_id,
        webhook=webhook,
        listTransactions=False,
        transactions=[{"id": "t-7", "status": "PushError", "message": "Tax rate not found"}],
    )
    wait_for(lambda: sync_of(serve, company_id).get("failingTransactions"), what="fetched")
    sync = sync_of(serve, company_id)
    assert sync["latest"]["syncId"] == sync_id and sync["health"] == "failing"
    assert sync["failingTransactions"] == [
        {"id": "t-7", "status": "PushError", "errorMessage": "Tax rate not found"}
    ]
    if webhook == "legacy":
        assert sync["latest"]["failureStage"] == "Pushing"
    asked = [r for r in codat.state()["requests"] if r["path"].endswith("/transactions")]
    assert [r["status"] for r in asked] == [200]
    # The same webhook again asks Codat nothing more; replay fetches nothing either.
    [delivered] = [
        d
        for d in codat.state()["deliveries"]
        if d["eventType"] != "company.created" and "ync" in (d["eventType"] or "")
    ]
    codat.admin("POST", "/webhooks/send", json={"body": _body_of(codat, delivered)})
    cli.ok("replay", "--company", company_id)
    wait_for(lambda: sync_of(serve, company_id) == sync, what="the same sync after replay")
    asked = [r for r in codat.state()["requests"] if r["path"].endswith("/transactions")]
    assert len(asked) == 1


def _body_of(codat: Codat, delivery: dict[str, Any]) -> dict[str, Any]:
    for body in codat.state()["events"]:
        if (body.get("id") or body.get("AlertId")) == delivery["eventId"]:
            return dict(body)
    raise AssertionError(f"no event body for {delivery}")


@pytest.mark.serve_env(RECONCILE_INTERVAL_SECONDS="1")
def test_a_missed_sync_webhook_is_found_by_the_sweep_once_a_day(
    codat: Codat, serve: Serve, cli: Cli
) -> None:
    company_id = configured(codat, serve, cli, "Silent Sync Ltd")
    checked = f"/companies/{company_id}/sync/expenses/syncs/latest/status"
    # The sweep reads the configured company's latest sync once (none yet: 404).
    wait_for(lambda: requests_to(codat, "GET", checked), what="the first sync check")
    # A sync ten days ago whose webhook never came: silent, as far as we know.
    ten_days_ago = clock.format_datetime(datetime.now(UTC) - timedelta(days=10))
    old = scripted(
        codat,
        company_id,
        webhook="none",
        syncUtc=ten_days_ago,
        transactions=[{"id": "t-1", "status": "Completed"}],
    )
    time.sleep(2.5)  # two sweeps or more: the company was checked today
    assert len(requests_to(codat, "GET", checked)) == 1
    assert (sync_of(serve, company_id).get("latest") or None) is None
    # On demand, Codat's latest sync is read and recorded: ten days old, the company is silent.
    result = cli.ok("reconcile", "--company", company_id)
    assert f"corrected {company_id}" in result.stdout and "latest expense sync" in result.stdout
    wait_for(lambda: sync_of(serve, company_id).get("health") == "silent", what="silent")
    sync = sync_of(serve, company_id)
    assert sync["latest"]["syncId"] == old and sync["latest"]["outcome"] == "successful"
    assert sync["lastSuccessfulAt"] == ten_days_ago
    events = (serve.company(company_id) or {})["events"]
    assert [e["source"] for e in events if e["eventType"] == "expenses.sync.observed"] == [
        "reconcile"
    ]
    wait_for(
        lambda: metric(serve, 'codat_expenses_companies_by_sync_health{health="silent"}') == 1,
        what="the sweep to count the silent company",
    )
    assert "no expense sync reported since" in cli.ok("status", company_id).stdout
    # Asked again, nothing new.
    assert "0 corrected" in cli.ok("reconcile", "--company", company_id).stdout


def test_reconcile_of_an_unknown_company_is_refused_and_records_nothing(
    serve: Serve, cli: Cli
) -> None:
    result = cli.run("reconcile", "--company", "3fa85f64-5717-4562-b3fc-2c963f66afa6")
    assert result.returncode != 0
    assert "no company '3fa85f64-5717-4562-b3fc-2c963f66afa6'" in result.stderr
    assert serve.company("3fa85f64-5717-4562-b3fc-2c963f66afa6") is None

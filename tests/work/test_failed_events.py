"""Commands that fail for good (the dead letter), and the two ways back: replay and redelivery.

`serve` runs with a 2 s retry horizon while the stand-in answers 500 to every attempt at creating
the partner expense connection; the command ends `failed`, the company stays `linked` with the
error, and `codat-expenses status --failed` lists it. Then Codat recovers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import PARTNER_EXPENSE_PATH, Cli, requests_to
from tests.conftest import Codat
from tests.support import ServeProcess, partner_connections, post_webhook, wait_for


@pytest.fixture
def short_horizon(
    tmp_path: Path, codat: Codat, secret: str, serve_port: int
) -> Iterator[ServeProcess]:
    """`serve` that gives up on a failing command after 2 s."""
    process = ServeProcess(
        tmp_path / "processor.db",
        {
            "CODAT_API_KEY": codat.server.api_key,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
            "RETRY_HORIZON_SECONDS": "2",
        },
        port=serve_port,
    )
    with process:
        yield process


def failed_company(codat: Codat, serve: ServeProcess, name: str) -> dict[str, Any]:
    """A company whose partner expense connection command ended in the dead letter."""
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.faults([{"method": "POST", "path": PARTNER_EXPENSE_PATH, "status": 500, "forSeconds": 4}])
    codat.authorize(company["id"], connection["id"])

    def dead() -> dict[str, Any] | None:
        document = serve.company(company["id"])
        return document if document and document["failed"] else None

    document = wait_for(dead, timeout=15, what="the command to end in the dead letter")
    return {"company": company, "connection": connection, "document": document}


def test_a_command_failing_past_the_horizon_is_a_dead_letter_then_replay_failed_heals_it(
    codat: Codat, short_horizon: ServeProcess
) -> None:
    serve = short_horizon
    made = failed_company(codat, serve, "Dead Letter Ltd")
    company_id = made["company"]["id"]
    document = made["document"]

    [failed] = document["failed"]
    assert failed["command"] == "create_partner_expense_connection"
    # The event that called for it says it failed, and only that one.
    assert [e["seq"] for e in document["events"] if e["outcome"] == "failed"] == [
        failed["causedBy"]
    ], document["events"]
    assert failed["status"] == "failed"
    assert failed["attempts"] >= 2
    assert "500" in failed["lastError"]
    assert document["pending"] == []
    assert document["state"] == "linked"
    assert document["accountingConnection"]["status"] == "Linked"
    assert document["expenseConnection"] is None
    assert document["lastError"] is not None and "500" in document["lastError"]["message"]
    assert any(e["eventType"] == "partnerExpenseConnection.failed" for e in document["events"]), (
        document["events"]
    )
    assert partner_connections(codat.state(), company_id) == []
    attempts = len(requests_to(codat, "POST", "/partnerExpense"))
    assert attempts >= 2

    # It stays there: serve does not retry a dead letter on its own.
    cli = Cli.beside(serve, codat.url)
    listed = cli.ok("status", "--failed")
    assert company_id in listed.stdout, listed.describe()
    assert "1 company" in listed.stdout, listed.describe()
    as_json = cli.ok("status", "--failed", "--json").json()
    [row] = as_json["companies"]
    assert row["id"] == company_id and row["state"] == "linked"
    assert row["failed"] and row["lastError"]
    one = cli.ok("status", company_id)
    assert "failed" in one.stdout and "create_partner_expense_connection" in one.stdout
    assert len(requests_to(codat, "POST", "/partnerExpense")) == attempts
    assert serve.state_of(company_id) == "linked"

    codat.admin("DELETE", "/faults")
    result = cli.run("replay", "--failed")
    assert result.returncode == 0, result.describe()
    assert "0 failures" in result.stdout, result.describe()

    document = serve.wait_state(company_id, "ready")
    assert document["failed"] == [] and document["pending"] == []
    assert not [e for e in document["events"] if e["outcome"] == "failed"], document["events"]
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]
    assert cli.ok("status", "--failed", "--json").json() == {"companies": []}

    # Nothing left to retry; a second replay --failed has nothing to do.
    again = cli.ok("replay", "--failed")
    assert "no stored events match" in again.stdout, again.describe()
    assert len(partner_connections(codat.state(), company_id)) == 1
    # A ready company whose command finally succeeded is not reported with the old failure.
    assert serve.wait_state(company_id, "ready")["lastError"] is None


def test_replay_failed_while_codat_still_fails_exits_1_and_keeps_the_error(
    codat: Codat, short_horizon: ServeProcess
) -> None:
    serve = short_horizon
    company_id = failed_company(codat, serve, "Still Failing Ltd")["company"]["id"]
    codat.admin("DELETE", "/faults")
    codat.faults([{"method": "POST", "path": PARTNER_EXPENSE_PATH, "status": 400, "times": 50}])
    cli = Cli.beside(serve, codat.url)
    result = cli.run("replay", "--failed", "--company", company_id)
    assert result.returncode == 1, result.describe()
    assert company_id in result.stderr and "400" in result.stderr, result.describe()
    document = serve.company(company_id)
    assert document is not None
    assert document["state"] == "linked" and document["failed"]
    assert partner_connections(codat.state(), company_id) == []


def test_redelivery_of_the_webhook_behind_a_failed_command_requeues_it(
    codat: Codat, short_horizon: ServeProcess, secret: str
) -> None:
    serve = short_horizon
    made = failed_company(codat, serve, "Redelivered Ltd")
    company_id = made["company"]["id"]
    [failed] = made["document"]["failed"]
    [cause] = [e for e in made["document"]["events"] if e["seq"] == failed["causedBy"]]
    assert cause["eventType"] == "connection.connected"
    [body] = [
        e
        for e in codat.state()["events"]
        if e.get("id") == cause["id"] and e["eventType"] == "connection.connected"
    ]
    codat.admin("DELETE", "/faults")

    answer = post_webhook(serve.url, body, secret, message_id=cause["messageId"])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "requeued", "messageId": cause["messageId"]}

    document = serve.wait_state(company_id, "ready")
    assert document["failed"] == []
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]
    [event] = [e for e in document["events"] if e["messageId"] == cause["messageId"]]
    assert event["deliveries"] == 2

    # Once the command succeeded, another delivery is a plain duplicate and changes nothing.
    again = post_webhook(serve.url, body, secret, message_id=cause["messageId"])
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    document = serve.wait_state(company_id, "ready")
    assert len(partner_connections(codat.state(), company_id)) == 1
    # A ready company whose command finally succeeded is not reported with the old failure.
    assert document["lastError"] is None, document["lastError"]


def test_a_requeued_command_gets_a_new_retry_window(
    codat: Codat, short_horizon: ServeProcess
) -> None:
    """`replay --failed` puts a dead letter back in line with the whole retry horizon ahead of
    it, counted from the requeue: a command first opened longer ago than the horizon once gave
    up at its first retryable failure after the requeue ("gave up after N s")."""
    serve = short_horizon
    company_id = failed_company(codat, serve, "Second Window Ltd")["company"]["id"]
    # Codat still fails for a while after the requeue, less than the horizon (2 s).
    codat.admin("DELETE", "/faults")
    codat.faults([{"method": "POST", "path": PARTNER_EXPENSE_PATH, "status": 500, "forSeconds": 1}])
    cli = Cli.beside(serve, codat.url)
    cli.run("replay", "--failed", "--company", company_id)

    document = serve.wait_state(company_id, "ready")
    assert document["failed"] == [] and document["pending"] == []
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]

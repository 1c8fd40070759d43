"""Reconciliation: lost webhooks healed by asking Codat, from the command line or serve's sweep.

The stand-in stops sending webhooks (`autoWebhooks: false`) before the customer authorizes, so
the processor only learns of the Linked connection by asking Codat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import Cli, requests_to, stored_state
from tests.conftest import Codat
from tests.support import ServeProcess, partner_connections, wait_for


@pytest.fixture
def sweeping(tmp_path: Path, codat: Codat, secret: str, serve_port: int) -> Iterator[ServeProcess]:
    """`serve` with its periodic reconciliation sweep every second."""
    process = ServeProcess(
        tmp_path / "processor.db",
        {
            "CODAT_API_KEY": codat.server.api_key,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
            "RECONCILE_INTERVAL_SECONDS": "1",
        },
        port=serve_port,
    )
    with process:
        yield process


def authorized_silently(codat: Codat, serve: ServeProcess, name: str) -> dict[str, Any]:
    """A company serve knows as pending_auth, whose connection.connected was never sent."""
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    codat.authorize(company["id"], connection["id"])
    return {"company": company, "connection": connection}


def connected_deliveries(codat: Codat) -> list[dict[str, Any]]:
    return [d for d in codat.state()["deliveries"] if d["eventType"] == "connection.connected"]


def test_reconcile_command_heals_a_lost_connected_webhook(
    codat: Codat, serve: ServeProcess
) -> None:
    made = authorized_silently(codat, serve, "Lost Webhook Ltd")
    company_id = made["company"]["id"]
    assert connected_deliveries(codat) == []
    time.sleep(0.5)
    assert serve.state_of(company_id) == "pending_auth"

    cli = Cli(serve.database, codat.url)
    result = cli.ok("reconcile")
    assert "checked 1 companies against Codat: 1 corrected, 0 errors" in result.stdout, (
        result.describe()
    )
    assert f"corrected {company_id}" in result.stdout

    document = serve.wait_state(company_id, "ready")
    assert document["accountingConnection"]["status"] == "Linked"
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]
    observed = [e for e in document["events"] if e["source"] == "reconcile"]
    assert [e["eventType"] for e in observed] == ["connection.observed"]
    assert observed[0]["outcome"] == "applied"

    # A second reconcile finds nothing to correct, and creates nothing.
    again = cli.ok("reconcile", "--company", company_id)
    assert "1 companies against Codat: 0 corrected, 0 errors" in again.stdout, again.describe()
    assert serve.wait_state(company_id, "ready")["pendingEvents"] == 0
    assert len(partner_connections(codat.state(), company_id)) == 1


def test_serve_sweep_heals_a_lost_connected_webhook(codat: Codat, sweeping: ServeProcess) -> None:
    made = authorized_silently(codat, sweeping, "Swept Ltd")
    company_id = made["company"]["id"]
    document = sweeping.wait_state(company_id, "ready", timeout=20)
    assert connected_deliveries(codat) == []
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]
    assert any(e["source"] == "reconcile" for e in document["events"])
    # Later sweeps leave a ready company alone (checked within the day) and create nothing.
    listed = len(requests_to(codat, "GET", f"/companies/{company_id}/connections"))
    time.sleep(2.5)
    assert len(requests_to(codat, "GET", f"/companies/{company_id}/connections")) == listed
    assert len(partner_connections(codat.state(), company_id)) == 1
    assert sweeping.state_of(company_id) == "ready"


def test_reconcile_records_a_company_deleted_in_codat(tmp_path: Path, codat: Codat) -> None:
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    cli = Cli(tmp_path / "processor.db", codat.url)
    gone = cli.onboard("Gone Ltd")["companyId"]
    kept = cli.onboard("Kept Ltd")["companyId"]
    codat.admin("DELETE", f"/companies/{gone}")

    result = cli.ok("reconcile")
    assert "checked 2 companies against Codat: 1 corrected, 0 errors" in result.stdout, (
        result.describe()
    )
    assert f"corrected {gone}" in result.stdout
    assert stored_state(cli.database, gone)[0] == "deleted"
    assert stored_state(cli.database, kept)[0] == "pending_auth"
    document = cli.document(gone)
    [deleted] = [e for e in document["events"] if e["eventType"] == "company.deleted"]
    assert deleted["source"] == "reconcile" and deleted["outcome"] == "applied"

    # Deleted companies are not asked about again, and recording it twice adds nothing.
    listed = len(requests_to(codat, "GET", f"/companies/{gone}/connections"))
    again = cli.ok("reconcile")
    assert "checked 1 companies" in again.stdout, again.describe()
    assert len(requests_to(codat, "GET", f"/companies/{gone}/connections")) == listed
    explicit = cli.ok("reconcile", "--company", gone)
    assert "0 corrected, 0 errors" in explicit.stdout, explicit.describe()
    assert (
        len([e for e in cli.document(gone)["events"] if e["eventType"] == "company.deleted"]) == 1
    )


def test_reconcile_waits_out_a_rate_limit(tmp_path: Path, codat: Codat) -> None:
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    cli = Cli(tmp_path / "processor.db", codat.url)
    onboarded = cli.onboard("Rate Limited Ltd")
    company_id = onboarded["companyId"]
    codat.authorize(company_id, onboarded["connectionId"])
    codat.faults(
        [
            {
                "method": "GET",
                "path": "/companies/*/connections",
                "status": 429,
                "retryAfter": "2",
                "times": 1,
            }
        ]
    )
    started = time.monotonic()
    result = cli.ok("reconcile")
    elapsed = time.monotonic() - started
    assert "1 corrected, 0 errors" in result.stdout, result.describe()
    assert elapsed >= 2.0, elapsed
    lists = requests_to(codat, "GET", f"/companies/{company_id}/connections")
    assert [r["status"] for r in lists] == [429, 200]
    assert stored_state(cli.database, company_id)[0] == "linked"

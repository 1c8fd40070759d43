"""Onboarding to its end (issue 13): from `onboard` to `configured`, over real HTTP.

`serve` runs with the stand-in for Codat, which sends `read.completed.initial` a moment after
the customer's Link (`dataReadDelay`); the command line (`options`, `configure`, `reconcile`,
`replay`) runs as real processes on the same store. The stand-in's request log shows exactly
what reached Codat.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from processor.sandbox.sender import new_message_id
from processor.sandbox.webhook_bodies import read_completed_event
from tests.cli_support import Cli, requests_to
from tests.conftest import Codat
from tests.support import TOKEN, Serve, post_webhook, wait_for

# The sweep stays off: only `reconcile` asks Codat, so a test knows who noticed what.
pytestmark = [
    pytest.mark.backends("sqlite", "postgres"),
    pytest.mark.serve_env(RECONCILE_INTERVAL_SECONDS="0"),
]
CONFIG = "/sync/expenses/config"
DATA_READ_DELAY = 0.2


def options_over_http(serve: Serve, company_id: str) -> httpx.Response:
    return httpx.get(
        f"{serve.url}/companies/{company_id}/options",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )


def awaiting(codat: Codat, serve: Serve, cli: Cli, name: str) -> dict[str, Any]:
    """A company onboarded by the command line, authorized, its data read by Codat: waiting
    for its configuration, with its choices stored."""
    codat.admin("POST", "/config", json={"dataReadDelay": DATA_READ_DELAY})
    onboarded = cli.onboard(name)
    company_id = onboarded["companyId"]
    codat.authorize(company_id, onboarded["connectionId"])
    document = serve.wait_state(company_id, "awaiting_configuration")
    wait_for(
        lambda: options_over_http(serve, company_id).status_code == 200,
        what="the choices to be stored",
    )
    # The configuration read back (not set), and nothing left to do.
    wait_for(
        lambda: (
            (serve.company(company_id) or {}).get("configuration", {}).get("status") == "not_set"
        ),
        what="the configuration to be read back",
    )
    return {**onboarded, "document": document}


@pytest.fixture
def cli(serve: Serve, codat: Codat) -> Cli:
    return Cli.beside(serve, codat.url)


def test_a_company_goes_from_onboard_to_configured(codat: Codat, serve: Serve, cli: Cli) -> None:
    company = awaiting(codat, serve, cli, "Configured Ltd")
    company_id = company["companyId"]
    document = serve.company(company_id) or {}
    assert document["dataReadAt"] is not None
    assert document["pending"] == [] and document["failed"] == []
    assert document["configuration"]["checkedAt"] is not None

    served = options_over_http(serve, company_id).json()
    listed = cli.ok("options", company_id, "--json").json()
    assert listed == served
    data = codat.state()["companies"]
    [ledger] = [c for c in data if c["id"] == company_id]
    bank = served["bankAccounts"][0]["id"]
    supplier = served["suppliers"][1]["id"]
    customer = served["customers"][0]["id"]
    assert all(a["isBankAccount"] for a in served["bankAccounts"])
    assert len(served["suppliers"]) == 3 and len(served["customers"]) == 2
    table = cli.ok("options", company_id).stdout
    assert bank in table and supplier in table and "Northern Rail" in table

    result = cli.ok(
        "configure",
        company_id,
        "--bank-account",
        bank,
        "--supplier",
        supplier,
        "--customer",
        customer,
        "--json",
    ).json()
    assert result["state"] == "configured", (result, ledger)
    assert result["configuration"] == {
        "bankAccount": bank,
        "supplier": supplier,
        "customer": customer,
    }
    [posted] = requests_to(codat, "POST", CONFIG)
    assert posted["idempotencyKey"] and posted["status"] == 200
    document = serve.wait_state(company_id, "configured")
    assert document["configuration"] == {
        "status": "set",
        "bankAccount": bank,
        "supplier": supplier,
        "customer": customer,
        "checkedAt": result["checkedAt"],
    }

    # Replay of a configured company: the same state, and nothing posted to Codat.
    posts = len([r for r in codat.state()["requests"] if r["method"] == "POST"])
    cli.ok("replay", "--company", company_id)
    after = serve.wait_state(company_id, "configured")
    assert after["configuration"] == document["configuration"]
    assert after["pending"] == []
    assert len([r for r in codat.state()["requests"] if r["method"] == "POST"]) == posts


def test_configure_with_an_unknown_supplier_is_refused_without_a_call(
    codat: Codat, serve: Serve, cli: Cli
) -> None:
    company = awaiting(codat, serve, cli, "Typo Ltd")
    company_id = company["companyId"]
    served = options_over_http(serve, company_id).json()
    before = len(codat.state()["requests"])
    result = cli.run(
        "configure",
        company_id,
        "--bank-account",
        served["bankAccounts"][0]["id"],
        "--supplier",
        "no-such-supplier",
        "--customer",
        served["customers"][0]["id"],
    )
    assert result.returncode == 2, result.describe()
    assert "--supplier: expected the id of one of the company's suppliers" in result.stderr
    assert "found 'no-such-supplier'" in result.stderr
    for supplier in served["suppliers"]:
        assert f"{supplier['id']} ({supplier['name']})" in result.stderr, result.stderr
    assert len(codat.state()["requests"]) == before
    assert requests_to(codat, "POST", CONFIG) == []
    assert serve.state_of(company_id) == "awaiting_configuration"


def test_configure_is_refused_before_the_data_is_read(codat: Codat, serve: Serve, cli: Cli) -> None:
    onboarded = cli.onboard("Unread Ltd")
    company_id = onboarded["companyId"]
    codat.authorize(company_id, onboarded["connectionId"])
    serve.wait_state(company_id, "ready")
    before = len(codat.state()["requests"])
    result = cli.run(
        "configure", company_id, "--bank-account", "b", "--supplier", "s", "--customer", "c"
    )
    assert result.returncode == 1, result.describe()
    assert f"company {company_id} is ready: expected awaiting_configuration" in result.stderr
    assert len(codat.state()["requests"]) == before
    refused = cli.run(
        "configure", company_id, "--bank-account", "b", "--supplier", "s", "--customer", "c",
        "--json",
    )  # fmt: skip
    assert refused.returncode == 1 and refused.json()["companyId"] == company_id
    unknown = cli.run(
        "configure", "nobody", "--bank-account", "b", "--supplier", "s", "--customer", "c"
    )
    assert unknown.returncode == 2 and "no company 'nobody'" in unknown.stderr
    missing = cli.run("options", company_id)
    assert missing.returncode == 1 and "no choices stored" in missing.stderr
    assert options_over_http(serve, company_id).status_code == 404


def test_a_read_before_connection_connected_still_ends_awaiting_configuration(
    codat: Codat, serve: Serve, cli: Cli, secret: str
) -> None:
    """Out of order: Codat's read.completed.initial arrives before connection.connected."""
    onboarded = cli.onboard("Early Read Ltd")
    company_id = onboarded["companyId"]
    [company] = [c for c in codat.state()["companies"] if c["id"] == company_id]
    body = read_completed_event("read.completed.initial", company, onboarded["connectionId"])
    answer = post_webhook(serve.url, body, secret, message_id=new_message_id())
    assert answer.status_code == 200, answer.text
    wait_for(
        lambda: (serve.company(company_id) or {}).get("dataReadAt") is not None,
        what="the read to be folded",
    )
    assert serve.state_of(company_id) == "pending_auth"
    # The stand-in's own read comes later (it has read nothing yet): its ledger exists once
    # POST .../read runs, which the test does after Link.
    codat.authorize(company_id, onboarded["connectionId"])
    codat.admin("POST", f"/companies/{company_id}/connections/{onboarded['connectionId']}/read")
    document = serve.wait_state(company_id, "awaiting_configuration")
    assert document["dataReadAt"] is not None


def test_a_configuration_set_directly_in_codat_is_adopted_by_reconcile(
    codat: Codat, serve: Serve, cli: Cli
) -> None:
    company = awaiting(codat, serve, cli, "Direct Ltd")
    company_id = company["companyId"]
    served = options_over_http(serve, company_id).json()
    chosen = {
        "bankAccount": {"id": served["bankAccounts"][1]["id"]},
        "supplier": {"id": served["suppliers"][0]["id"]},
        "customer": {"id": served["customers"][1]["id"]},
    }
    answer = codat.http.post(f"/companies/{company_id}{CONFIG}", json=chosen)
    assert answer.status_code == 200, answer.text
    result = cli.ok("reconcile", "--company", company_id)
    assert f"corrected {company_id}" in result.stdout
    document = serve.wait_state(company_id, "configured")
    assert document["configuration"]["supplier"] == served["suppliers"][0]["id"]
    sources = [e["source"] for e in document["events"] if e["eventType"].startswith("expenses.")]
    assert sources == ["command", "reconcile"]
    # A second sweep finds nothing new.
    again = cli.ok("reconcile", "--company", company_id)
    assert "0 corrected" in again.stdout

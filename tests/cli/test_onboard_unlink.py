"""`codat-expenses onboard` and `codat-expenses unlink`, as real processes against the stand-in.

Every command runs as a subprocess on a real store of each backend (a SQLite file, a PostgreSQL
database); Codat is the local stand-in on loopback, whose request log shows exactly what reached
it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from processor.codat.platforms import PLATFORMS
from tests.cli_support import Cli, linked_without_serve, requests_to, stored_state
from tests.conftest import Codat
from tests.support import ServeProcess, partner_connections, wait_for

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
pytestmark = pytest.mark.backends("sqlite", "postgres")


@pytest.fixture
def cli(tmp_path: Path, codat: Codat, database_url: str) -> Cli:
    # No serve in these tests: the stand-in need not try to deliver webhooks to anyone.
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    return Cli(tmp_path / "processor.db", codat.url, database_url=database_url)


def companies_named(codat: Codat, name: str) -> list[dict[str, Any]]:
    return [c for c in codat.state()["companies"] if c["name"] == name]


@pytest.mark.parametrize(
    ("platform", "key", "platform_name"),
    [
        ("gbol", "gbol", "Xero"),
        ("QuickBooks Online", "qhyg", "QuickBooks Online"),
        ("quickbooks ONLINE", "qhyg", "QuickBooks Online"),
    ],
)
def test_onboard_prints_the_company_and_link_url_and_stores_pending_auth(
    cli: Cli, codat: Codat, platform: str, key: str, platform_name: str
) -> None:
    result = cli.ok("onboard", "--name", "Sawayn Group", "--platform", platform)
    match = re.search(rf"company ({UUID}) \(Sawayn Group\): pending_auth", result.stdout)
    assert match, result.describe()
    company_id = match.group(1)
    link = re.search(r"Link URL: (\S+)", result.stdout)
    assert link and link.group(1).startswith("http"), result.describe()

    [company] = companies_named(codat, "Sawayn Group")
    assert company["id"] == company_id
    [connection] = company["connections"]
    assert connection["platformName"] == platform_name
    assert connection["status"] == "PendingAuth"
    assert connection["linkUrl"] == link.group(1)
    assert f"accounting connection {connection['id']} ({key})" in result.stdout

    state, data = stored_state(cli.database_url, company_id)
    assert state == "pending_auth"
    assert data is not None
    assert data["name"] == "Sawayn Group"
    assert data["accounting_connection"]["id"] == connection["id"]
    assert data["accounting_connection"]["status"] == "PendingAuth"
    assert data["accounting_connection"]["platform_key"] == key

    document = cli.document(company_id)
    assert document["state"] == "pending_auth"
    assert document["accountingConnection"]["status"] == "PendingAuth"
    assert document["pending"] == [] and document["failed"] == []


def test_onboard_json_output_and_idempotency_keys(cli: Cli, codat: Codat) -> None:
    result = cli.ok("onboard", "--name", "Json Ltd", "--platform", "Xero", "--json")
    document = result.json()
    assert document["state"] == "pending_auth"
    assert document["name"] == "Json Ltd"
    assert document["platformKey"] == "gbol"
    assert re.fullmatch(UUID, document["companyId"])
    assert document["linkUrl"].startswith("http")

    [company] = companies_named(codat, "Json Ltd")
    assert company["id"] == document["companyId"]
    assert [c["id"] for c in company["connections"]] == [document["connectionId"]]
    assert stored_state(cli.database_url, document["companyId"])[0] == "pending_auth"

    posts = [r for r in codat.state()["requests"] if r["method"] == "POST"]
    assert [r["path"] for r in posts] == [
        "/companies",
        f"/companies/{document['companyId']}/connections",
    ]
    keys = [r["idempotencyKey"] for r in posts]
    assert all(keys), posts
    assert len(set(keys)) == 2, "each creation has its own Idempotency-Key"


@pytest.mark.parametrize("platform", ["sage", "Xero Online", "GBOLX", ""])
def test_onboard_refuses_an_unknown_platform_before_calling_codat(
    cli: Cli, codat: Codat, platform: str
) -> None:
    before = len(codat.state()["requests"])
    result = cli.run("onboard", "--name", "Nowhere Ltd", "--platform", platform)
    assert result.returncode == 2, result.describe()
    assert "Unknown platform" in result.stderr, result.describe()
    assert repr(platform) in result.stderr, result.describe()
    for key, name in PLATFORMS.items():
        assert key in result.stderr and name in result.stderr, result.describe()
    assert "Traceback" not in result.output
    assert len(codat.state()["requests"]) == before
    assert companies_named(codat, "Nowhere Ltd") == []


def test_onboard_failing_between_company_and_connection_is_continued_with_company(
    cli: Cli, codat: Codat
) -> None:
    codat.faults(
        [{"method": "POST", "path": "/companies/*/connections", "status": 500, "times": 1}]
    )
    failed = cli.run("onboard", "--name", "Halfway Ltd", "--platform", "gbol")
    assert failed.returncode == 1, failed.describe()
    [company] = companies_named(codat, "Halfway Ltd")
    company_id = company["id"]
    assert company["connections"] == []
    assert f"--company {company_id}" in failed.stderr, failed.describe()
    assert "Run again" in failed.stderr, failed.describe()
    assert "Traceback" not in failed.output
    # The company is known to the store, without an accounting connection.
    assert stored_state(cli.database_url, company_id)[0] == "created"

    again = cli.ok(
        "onboard", "--name", "Halfway Ltd", "--platform", "gbol", "--company", str(company_id)
    )
    assert f"company {company_id} (Halfway Ltd): pending_auth" in again.stdout, again.describe()
    assert "Link URL: http" in again.stdout

    [company] = companies_named(codat, "Halfway Ltd")
    assert len(company["connections"]) == 1
    assert company["connections"][0]["status"] == "PendingAuth"
    assert len(requests_to(codat, "POST", "/companies")) == 3  # company, failed, connection
    assert len([r for r in codat.state()["requests"] if r["path"] == "/companies"]) == 1
    assert stored_state(cli.database_url, str(company_id))[0] == "pending_auth"
    # Both runs' calls about the company are on its timeline, the refused one first.
    document = json.loads(cli.ok("status", str(company_id), "--json").stdout)
    posts = [
        call["status"]
        for call in document["codatCalls"]
        if call["operation"] == "POST /companies/{id}/connections"
    ]
    assert posts == ["500", "200"], document["codatCalls"]


def test_onboard_json_failure_names_the_company(cli: Cli, codat: Codat) -> None:
    codat.faults(
        [{"method": "POST", "path": "/companies/*/connections", "status": 503, "times": 1}]
    )
    failed = cli.run("onboard", "--name", "Json Halfway", "--platform", "gbol", "--json")
    assert failed.returncode == 1, failed.describe()
    [company] = companies_named(codat, "Json Halfway")
    document = failed.json()
    assert document["companyId"] == company["id"]
    assert f"--company {company['id']}" in document["error"]


def test_unlink_of_a_linked_connection(tmp_path: Path, codat: Codat, serve: ServeProcess) -> None:
    company = codat.create_company("Unlink Me Ltd")
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.authorize(company["id"], connection["id"])
    serve.wait_state(company["id"], "ready")

    cli = Cli.beside(serve, codat.url)
    result = cli.ok("unlink", company["id"])
    assert f"connection {connection['id']} of company {company['id']} is Unlinked" in (
        result.stdout
    ), result.describe()

    [patch] = requests_to(codat, "PATCH", f"/connections/{connection['id']}")
    assert patch["status"] == 200 and patch["idempotencyKey"]
    [record] = [c for c in codat.state()["companies"] if c["id"] == company["id"]]
    accounting = [c for c in record["connections"] if c["id"] == connection["id"]]
    assert accounting[0]["status"] == "Unlinked"

    assert stored_state(serve.database_url, company["id"])[0] == "disconnected"
    document = serve.wait_state(company["id"], "disconnected")
    assert document["accountingConnection"]["status"] == "Unlinked"
    # The stand-in's own connection.disconnected webhook changes nothing more.
    wait_for(
        lambda: any(
            e["eventType"] == "connection.disconnected" and e["source"] == "webhook"
            for e in (serve.company(company["id"]) or {"events": []})["events"]
        ),
        what="the stand-in's connection.disconnected webhook",
    )
    folded = wait_for(
        lambda: (serve.company(company["id"]) or {}).get("pendingEvents") == 0,
        what="every event of the company folded",
    )
    assert folded and serve.state_of(company["id"]) == "disconnected"
    assert len(partner_connections(codat.state(), company["id"])) == 1


def test_unlink_of_a_linked_connection_without_serve(cli: Cli, codat: Codat) -> None:
    onboarded = linked_without_serve(cli, codat, "Quiet Unlink Ltd")
    company_id = onboarded["companyId"]
    cli.ok("unlink", company_id)
    state, data = stored_state(cli.database_url, company_id)
    assert state == "disconnected"
    assert data is not None and data["accounting_connection"]["status"] == "Unlinked"
    document = cli.document(company_id)
    assert document["pending"] == [], "the intent is cancelled once the connection is unlinked"
    assert partner_connections(codat.state(), company_id) == []


def test_unlink_refuses_a_pending_auth_connection_without_calling_codat(
    cli: Cli, codat: Codat
) -> None:
    onboarded = cli.onboard("Not Yet Linked Ltd")
    company_id = onboarded["companyId"]
    result = cli.run("unlink", company_id)
    assert result.returncode == 1, result.describe()
    assert "no Linked accounting connection" in result.stderr, result.describe()
    assert "PendingAuth" in result.stderr, result.describe()
    assert "Traceback" not in result.output
    assert requests_to(codat, "PATCH", "/connections/") == []
    assert stored_state(cli.database_url, company_id)[0] == "pending_auth"


def test_unlink_of_an_unknown_company(cli: Cli, codat: Codat) -> None:
    cli.onboard("Someone Else Ltd")  # creates the database
    unknown = "00000000-0000-0000-0000-000000000000"
    result = cli.run("unlink", unknown)
    assert result.returncode == 1, result.describe()
    assert unknown in result.stderr and "Traceback" not in result.output
    assert requests_to(codat, "PATCH", "/connections/") == []


@pytest.mark.parametrize(
    ("name", "fault", "status"),
    [
        ("***", None, "400"),  # no allowed character: Codat refuses the company
        ("Offline Ltd", {"method": "POST", "path": "/companies", "status": 503, "times": 2}, "503"),
    ],
)
def test_onboard_says_why_when_codat_refuses_the_company(
    cli: Cli, codat: Codat, name: str, fault: dict[str, object] | None, status: str
) -> None:
    if fault is not None:
        codat.faults([fault])
    result = cli.run("onboard", "--name", name, "--platform", "gbol")
    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.output, result.describe()
    assert result.stderr.startswith("codat-expenses: "), result.describe()
    assert status in result.stderr, result.describe()
    assert codat.state()["companies"] == []

    as_json = cli.run("onboard", "--name", name, "--platform", "gbol", "--json")
    assert as_json.returncode == 1, as_json.describe()
    assert "Traceback" not in as_json.output, as_json.describe()
    assert as_json.json()["companyId"] is None and as_json.json()["error"]
    assert codat.state()["companies"] == []


def test_onboard_continuing_an_unknown_company_is_refused(cli: Cli, codat: Codat) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    result = cli.run("onboard", "--name", "X", "--platform", "gbol", "--company", unknown)
    assert result.returncode == 1, result.describe()
    assert f"cannot continue with company {unknown}" in result.stderr, result.describe()
    assert "404" in result.stderr and "Traceback" not in result.output
    assert requests_to(codat, "POST", "/connections") == []


def test_unlink_refused_by_codat_says_so(cli: Cli, codat: Codat) -> None:
    onboarded = linked_without_serve(cli, codat, "Already Unlinked Ltd")
    company_id, connection_id = onboarded["companyId"], onboarded["connectionId"]
    # The customer unlinked it in Codat meanwhile; the store still believes it is Linked.
    answer = codat.http.patch(
        f"/companies/{company_id}/connections/{connection_id}", json={"status": "Unlinked"}
    )
    assert answer.status_code == 200, answer.text
    result = cli.run("unlink", company_id)
    assert result.returncode == 1, result.describe()
    assert f"Codat refused to unlink {connection_id}" in result.stderr, result.describe()
    assert "Traceback" not in result.output

"""The command line's guards: unknown ids refused before anything is written or sent, read-only
commands that leave no file behind, and `onboard` refusing to make a second company or a second
accounting connection unless told to (`--force`).

Every command is a real `python -m processor` subprocess on a real SQLite file in tmp_path; Codat
is the local stand-in on loopback, whose request log shows exactly what reached it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import Cli, file_digests, requests_to, stored_state
from tests.conftest import Codat
from tests.support import API_KEY, ServeProcess, open_sqlite, wait_for

FUTURE = "2999-01-01T00:00:00Z"


@pytest.fixture
def cli(tmp_path: Path, codat: Codat) -> Cli:
    # No serve listens: the stand-in must not try to deliver webhooks to anyone.
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    return Cli(tmp_path / "processor.db", codat.url)


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def content(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the store holds about companies, events and commands (not its heartbeat)."""
    store = open_sqlite(database, readonly=True)
    try:
        return {
            table: store.conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in ("events", "companies", "effects")
        }
    finally:
        store.close()


def stored_types(cli: Cli, company_id: str) -> list[str]:
    """The event types of the company's log, as `status --json` shows them."""
    return sorted({event["eventType"] for event in cli.document(company_id)["events"]})


def exact_requests(codat: Codat, method: str, path: str) -> list[dict[str, Any]]:
    return [r for r in requests_to(codat, method, path) if r["path"] == path]


# -- reconcile ---------------------------------------------------------------------------------


def test_reconcile_refuses_a_company_the_store_does_not_know_and_writes_nothing(
    cli: Cli, codat: Codat
) -> None:
    known = cli.onboard("Known Ltd")
    digests = file_digests(cli.database)
    files = listing(cli.database.parent)
    requests = len(codat.state()["requests"])

    result = cli.run("reconcile", "--company", "nonsense")
    assert result.returncode == 2, result.describe()
    assert "no company 'nonsense'" in result.stderr, result.describe()
    assert "expected a stored company id" in result.stderr, result.describe()
    assert "Traceback" not in result.output
    assert result.stdout == "", result.describe()

    assert file_digests(cli.database) == digests, "not even a heartbeat may be written"
    assert listing(cli.database.parent) == files
    assert len(codat.state()["requests"]) == requests, "nothing may be asked of Codat"
    unknown = cli.run("status", "nonsense")
    assert unknown.returncode == 1, unknown.describe()
    assert "no company 'nonsense'" in unknown.stderr, unknown.describe()

    # A known company still reconciles: its Linked connection is found and recorded.
    codat.authorize(known["companyId"], known["connectionId"])
    done = cli.ok("reconcile", "--company", known["companyId"])
    assert "checked 1 companies against Codat: 1 corrected, 0 errors" in done.stdout, (
        done.describe()
    )
    assert stored_state(cli.database_url, known["companyId"])[0] == "linked"


# -- replay selectors ---------------------------------------------------------------------------


def test_replay_refuses_selectors_naming_what_the_store_never_saw(cli: Cli, codat: Codat) -> None:
    company_id = cli.onboard("Selected Ltd")["companyId"]
    types = stored_types(cli, company_id)
    assert types == ["company.created", "connection.created"], types
    digests = file_digests(cli.database)
    rows = content(cli.database)
    requests = len(codat.state()["requests"])

    for dry_run in (["--dry-run"], []):
        unknown_company = cli.run("replay", *dry_run, "--company", "unknown-company-id")
        assert unknown_company.returncode == 2, unknown_company.describe()
        assert "no company 'unknown-company-id'" in unknown_company.stderr, (
            unknown_company.describe()
        )

        unknown_type = cli.run("replay", *dry_run, "--type", "some.type.never.stored")
        assert unknown_type.returncode == 2, unknown_type.describe()
        assert "'some.type.never.stored'" in unknown_type.stderr, unknown_type.describe()
        assert f"stored types: {', '.join(types)}" in unknown_type.stderr, unknown_type.describe()

        unknown_event = cli.run("replay", *dry_run, "--event", "msg_never_stored")
        assert unknown_event.returncode == 2, unknown_event.describe()
        assert "'msg_never_stored'" in unknown_event.stderr, unknown_event.describe()

        for result in (unknown_company, unknown_type, unknown_event):
            assert "nothing to do" not in result.output, result.describe()
            assert "Traceback" not in result.output, result.describe()
        if dry_run:
            assert file_digests(cli.database) == digests

    assert content(cli.database) == rows
    assert len(codat.state()["requests"]) == requests

    # Known selectors that happen to match nothing are not an error.
    for args in (["--since", FUTURE], ["--company", company_id, "--since", FUTURE]):
        nothing = cli.ok("replay", *args)
        assert "no stored events match" in nothing.stdout, nothing.describe()
        assert "nothing to do" in nothing.stdout, nothing.describe()
        dry = cli.ok("replay", "--dry-run", *args)
        assert "0 matching events, 0 companies" in dry.stdout, dry.describe()
    # And a stored type does select.
    typed = cli.ok("replay", "--dry-run", "--type", "connection.created")
    assert "1 matching events, 1 companies" in typed.stdout, typed.describe()


# -- read-only commands leave no file behind ------------------------------------------------------


def test_dry_run_and_status_leave_no_new_file_beside_the_database(
    tmp_path: Path, codat: Codat, secret: str
) -> None:
    database = tmp_path / "processor.db"
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    cli = Cli(database, codat.url)
    company_id = cli.onboard("No Files Ltd")["companyId"]
    cli.ok("replay")
    files = listing(tmp_path)
    assert files == ["processor.db"], files  # no -wal or -shm with no process open
    digests = file_digests(database)

    dry = cli.ok("replay", "--dry-run")
    assert company_id in dry.stdout and "1 companies" in dry.stdout, dry.describe()
    assert listing(tmp_path) == files
    assert file_digests(database) == digests

    table = cli.ok("status")
    assert company_id in table.stdout, table.describe()
    one = cli.ok("status", company_id)
    assert "pending_auth" in one.stdout, one.describe()
    assert listing(tmp_path) == files
    assert file_digests(database) == digests

    # With serve running, its write-ahead log exists: the dry run reads beside it, and sees
    # what is only in the log so far (a company onboarded while serve holds the file open).
    env = {"CODAT_API_KEY": API_KEY, "CODAT_BASE_URL": codat.url, "CODAT_WEBHOOK_SECRET": secret}
    with ServeProcess(database, env):
        wal = Path(f"{database}-wal")
        wait_for(wal.exists, timeout=10, what="serve's -wal")
        later = cli.onboard("In The Log Ltd")["companyId"]
        assert wal.stat().st_size > 0
        beside = cli.ok("replay", "--dry-run")
        assert company_id in beside.stdout and later in beside.stdout, beside.describe()
        assert "4 matching events, 2 companies, 0 would change" in beside.stdout, beside.describe()
        assert cli.ok("status", later, "--json").json()["state"] == "pending_auth"


# -- onboard refuses duplicates -------------------------------------------------------------------


def test_onboard_refuses_a_second_accounting_connection_unless_forced(
    cli: Cli, codat: Codat
) -> None:
    first = cli.onboard("Second Connection Ltd")
    company_id, connection_id = first["companyId"], first["connectionId"]
    path = f"/companies/{company_id}/connections"
    assert len(exact_requests(codat, "POST", path)) == 1
    again = ("onboard", "--name", "Second Connection Ltd", "--company", company_id)

    for status in ("PendingAuth", "Linked"):
        if status == "Linked":
            codat.authorize(company_id, connection_id)
        refused = cli.run(*again, "--platform", "gbol")
        assert refused.returncode == 1, refused.describe()
        assert f"already has a {status} accounting connection {connection_id}" in refused.stderr
        assert first["linkUrl"] in refused.stderr, refused.describe()
        assert "--force" in refused.stderr, refused.describe()

        as_json = cli.run(*again, "--platform", "gbol", "--json")
        assert as_json.returncode == 1, as_json.describe()
        answer = as_json.json()
        assert answer["companyId"] == company_id, answer
        assert connection_id in answer["error"], answer
        existing = answer["existing"]
        assert existing["connectionId"] == connection_id, answer
        assert existing["linkUrl"] == first["linkUrl"], answer
        assert existing["status"] == status, answer
        assert len(exact_requests(codat, "POST", path)) == 1, "no second connection was asked for"

    forced = cli.ok(*again, "--platform", "gbol", "--force", "--json").json()
    assert forced["companyId"] == company_id
    assert forced["connectionId"] != connection_id
    assert len(exact_requests(codat, "POST", path)) == 2
    [company] = [c for c in codat.state()["companies"] if c["id"] == company_id]
    assert {c["id"] for c in company["connections"]} == {connection_id, forced["connectionId"]}


def test_onboard_refuses_a_name_already_in_the_store_unless_forced(cli: Cli, codat: Codat) -> None:
    first = cli.onboard("Twice Named Ltd")["companyId"]
    assert len(exact_requests(codat, "POST", "/companies")) == 1

    refused = cli.run("onboard", "--name", "Twice Named Ltd", "--platform", "gbol")
    assert refused.returncode == 1, refused.describe()
    assert "'Twice Named Ltd' is already in the store" in refused.stderr, refused.describe()
    assert first in refused.stderr and "--force" in refused.stderr, refused.describe()
    as_json = cli.run("onboard", "--name", "Twice Named Ltd", "--platform", "gbol", "--json")
    assert as_json.returncode == 1, as_json.describe()
    answer = as_json.json()
    assert "already in the store" in answer["error"], answer
    assert answer["existing"] == {"companyIds": [first]}, answer
    assert len(exact_requests(codat, "POST", "/companies")) == 1, "no second company was asked for"

    # Another name is not refused; --force creates the second company of the same name.
    cli.onboard("Another Name Ltd")
    forced = cli.ok("onboard", "--name", "Twice Named Ltd", "--platform", "gbol", "--force")
    assert "Twice Named Ltd" in forced.stdout, forced.describe()
    assert len(exact_requests(codat, "POST", "/companies")) == 3
    named = [c["id"] for c in codat.state()["companies"] if c["name"] == "Twice Named Ltd"]
    assert len(named) == 2 and first in named, named
    both = cli.run("onboard", "--name", "Twice Named Ltd", "--platform", "gbol", "--json")
    assert both.returncode == 1, both.describe()
    assert both.json()["existing"] == {"companyIds": sorted(named)}


def test_onboard_compares_names_as_codat_keeps_them(cli: Cli, codat: Codat) -> None:
    """Codat strips what it does not allow in a company name ("Acme (UK)" is kept as "Acme UK"):
    the stored name is Codat's, so the guard compares the name as Codat will keep it."""
    first = cli.onboard("Brackets (UK) Ltd")["companyId"]
    [company] = [c for c in codat.state()["companies"] if c["id"] == first]
    assert company["name"] == "Brackets UK Ltd"

    refused = cli.run("onboard", "--name", "Brackets (UK) Ltd", "--platform", "gbol")
    assert refused.returncode == 1, refused.describe()
    assert (
        "a company named 'Brackets (UK) Ltd' (as Codat keeps it: 'Brackets UK Ltd') "
        "is already in the store"
    ) in refused.stderr, refused.describe()
    assert first in refused.stderr, refused.describe()
    assert len(exact_requests(codat, "POST", "/companies")) == 1, "no second company was asked for"

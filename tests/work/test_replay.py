"""`codat-expenses replay`, as a real process on the database `serve` wrote, against the stand-in.

Replay rebuilds a company from its whole event log through the live handlers, then carries out
only the commands still needed: it must restore lost or corrupted state exactly, never change
anything on a dry run, stay correct beside a running `serve`, and survive being killed.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from processor import clock
from store import open_store
from tests.cli_support import (
    PARTNER_EXPENSE_PATH,
    Cli,
    Result,
    file_digests,
    linked_without_serve,
    ready_with_serve,
    requests_to,
    stored_state,
    without_times,
)
from tests.conftest import Codat
from tests.support import Serve, open_db, partner_connections, wait_for

# Replays against the store of a `serve` on each backend (see tests/conftest.py).
pytestmark = pytest.mark.backends("sqlite", "postgres")


def damage(database_url: str, company_id: str, how: str) -> None:
    """Simulate a bug: lose or corrupt the company's state row (serve is stopped)."""
    store = open_store(database_url)
    try:
        with store.transaction():
            if how == "delete":
                store.delete_company_state(company_id)
            else:
                store.save_company(
                    company_id,
                    "created",
                    {"company_id": company_id, "name": "Wrong Name", "deleted": False},
                    clock.now(),
                )
    finally:
        store.close()


def test_replay_restores_a_deleted_and_a_corrupted_company_state_exactly(
    codat: Codat, serve: Serve
) -> None:
    lost = ready_with_serve(codat, serve, "Lost State Ltd")["company"]["id"]
    corrupted = ready_with_serve(codat, serve, "Corrupted State Ltd")["company"]["id"]
    untouched = ready_with_serve(codat, serve, "Untouched Ltd")["company"]["id"]
    serve.stop()
    cli = Cli.beside(serve, codat.url)
    live = {c: cli.document(c) for c in (lost, corrupted, untouched)}
    live_rows = {c: stored_state(serve.database_url, c) for c in (lost, corrupted, untouched)}
    assert all(row[0] == "ready" for row in live_rows.values())

    damage(serve.database_url, lost, "delete")
    damage(serve.database_url, corrupted, "corrupt")
    assert stored_state(serve.database_url, lost) == (None, None)
    assert stored_state(serve.database_url, corrupted)[0] == "created"
    requests_before = len(codat.state()["requests"])

    # One by company id, the other by the message id of one of its events.
    message_id = live[corrupted]["events"][-1]["messageId"]
    for company_id, selector in ((lost, ["--company", lost]), (corrupted, ["--event", message_id])):
        result = cli.ok("replay", *selector)
        assert "1 changed state" in result.stdout, result.describe()
        assert "0 failures" in result.stdout, result.describe()
        assert stored_state(serve.database_url, company_id) == live_rows[company_id]
        assert without_times(cli.document(company_id)) == without_times(live[company_id])
    # The untouched company was not replayed and is as it was, updatedAt included.
    assert cli.document(untouched) == live[untouched]
    # Nothing had to be asked of Codat: both companies were already ready.
    assert len(codat.state()["requests"]) == requests_before
    for company_id in (lost, corrupted, untouched):
        assert len(partner_connections(codat.state(), company_id)) == 1

    # A replay of a healthy company changes nothing, and serve carries on from it.
    again = cli.ok("replay", "--company", untouched)
    assert "0 changed state" in again.stdout, again.describe()
    assert without_times(cli.document(untouched)) == without_times(live[untouched])
    serve.start()
    for company_id in (lost, corrupted, untouched):
        document = serve.wait_state(company_id, "ready")
        assert without_times(document) == without_times(live[company_id])


def test_replay_of_everything_rebuilds_every_company(codat: Codat, serve: Serve) -> None:
    ids = [ready_with_serve(codat, serve, f"Whole Log {n} Ltd")["company"]["id"] for n in range(3)]
    serve.stop()
    cli = Cli.beside(serve, codat.url)
    live = {c: stored_state(serve.database_url, c) for c in ids}
    for company_id in ids:
        damage(serve.database_url, company_id, "delete")
    result = cli.ok("replay")
    assert "of 3 companies: 3 changed state, 0 commands run, 0 failures" in result.stdout, (
        result.describe()
    )
    for company_id in ids:
        assert stored_state(serve.database_url, company_id) == live[company_id]
        assert len(partner_connections(codat.state(), company_id)) == 1


@pytest.mark.backends("sqlite")  # the proof that nothing was written is the files' digests
def test_replay_dry_run_changes_nothing_and_shows_the_plan(
    tmp_path: Path, codat: Codat, serve: Serve
) -> None:
    ready = ready_with_serve(codat, serve, "Dry Ready Ltd")["company"]["id"]
    serve.stop()
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    cli = Cli.beside(serve, codat.url)
    waiting = linked_without_serve(cli, codat, "Dry Linked Ltd")["companyId"]
    damage(serve.database_url, ready, "corrupt")
    documents = {c: cli.document(c) for c in (ready, waiting)}
    digests = file_digests(serve.database)
    files = sorted(p.name for p in tmp_path.iterdir())
    requests_before = len(codat.state()["requests"])

    result = cli.ok("replay", "--dry-run")
    out = result.stdout
    for header in ("state now", "after replay", "commands it would run"):
        assert header in out, result.describe()
    lines = {c: next(line for line in out.splitlines() if c in line) for c in (ready, waiting)}
    assert "created" in lines[ready] and "ready" in lines[ready], out
    assert "create_partner_expense_connection" not in lines[ready], out
    assert lines[waiting].count("linked") == 2, out
    assert "create_partner_expense_connection" in lines[waiting], out
    assert "2 companies, 1 would change" in out, out

    one = cli.ok("replay", "--dry-run", "--company", waiting)
    assert waiting in one.stdout and ready not in one.stdout, one.describe()
    assert "1 companies, 0 would change" in one.stdout, one.describe()

    assert file_digests(serve.database) == digests
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    assert len(codat.state()["requests"]) == requests_before
    assert {c: cli.document(c) for c in (ready, waiting)} == documents
    assert partner_connections(codat.state(), waiting) == []

    # Again with a write-ahead log in use: another process holds the database open for writing.
    writer = open_db(serve.database)
    try:
        with writer.transaction():
            writer.mark_checked(ready, clock.now())
        assert Path(f"{serve.database}-wal").stat().st_size > 0
        digests = file_digests(serve.database)
        assert len(digests) == 2
        with_wal = cli.ok("replay", "--dry-run")
        assert "2 companies, 1 would change" in with_wal.stdout, with_wal.describe()
        assert file_digests(serve.database) == digests
    finally:
        writer.close()

    # The real replay then does what the dry run said.
    done = cli.ok("replay")
    assert "2 changed state, 1 commands run, 0 failures" in done.stdout, done.describe()
    assert stored_state(serve.database_url, ready)[0] == "ready"
    assert stored_state(serve.database_url, waiting)[0] == "ready"
    assert len(partner_connections(codat.state(), waiting)) == 1


def test_replay_with_nothing_matching(tmp_path: Path, codat: Codat, serve: Serve) -> None:
    company_id = ready_with_serve(codat, serve, "Matching Ltd")["company"]["id"]
    serve.stop()
    cli = Cli.beside(serve, codat.url)
    before = stored_state(serve.database_url, company_id)
    unknown = "00000000-0000-0000-0000-000000000000"
    for args, named in (
        (["--company", unknown], f"no company '{unknown}'"),
        (["--event", "msg_never_seen"], "no event or webhook message 'msg_never_seen'"),
        (["--company", company_id, "--type", "connection.nonsense"], "connection.connected"),
    ):
        for dry_run in ([], ["--dry-run"]):
            refused = cli.run("replay", *dry_run, *args)
            assert refused.returncode == 2, refused.describe()
            assert named in refused.stderr, refused.describe()
    for args in (["--since", "2999-01-01T00:00:00Z"], ["--failed"]):
        result = cli.ok("replay", *args)
        assert "no stored events match" in result.stdout, result.describe()
        assert "nothing to do" in result.stdout, result.describe()
        dry = cli.ok("replay", "--dry-run", *args)
        assert "0 matching events, 0 companies" in dry.stdout, dry.describe()
    assert stored_state(serve.database_url, company_id) == before

    # And the filters do select when something matches.
    since = cli.ok("replay", "--dry-run", "--since", "2000-01-01T00:00:00Z")
    assert "1 companies" in since.stdout and company_id in since.stdout, since.describe()


def test_replay_since_accepts_a_plain_iso_8601_date(codat: Codat, serve: Serve) -> None:
    company_id = ready_with_serve(codat, serve, "Plain Date Ltd")["company"]["id"]
    serve.stop()
    cli = Cli.beside(serve, codat.url)
    since = cli.ok("replay", "--dry-run", "--since", "2000-01-01")
    assert "1 companies" in since.stdout and company_id in since.stdout, since.describe()
    later = cli.ok("replay", "--dry-run", "--since", "2999-12-31")
    assert "0 matching events, 0 companies" in later.stdout, later.describe()


def test_replay_refuses_a_bad_since(tmp_path: Path, codat: Codat) -> None:
    cli = Cli(tmp_path / "processor.db", codat.url)
    for bad in ("yesterday", "2024-13-45T00:00:00Z", "2024-02-30", ""):
        for extra in ([], ["--dry-run"]):
            result = cli.run("replay", "--since", bad, *extra)
            assert result.returncode == 2, result.describe()
            assert "--since" in result.stderr, result.describe()
            assert "ISO 8601" in result.stderr, result.describe()
            assert repr(bad) in result.stderr, result.describe()
            assert "Traceback" not in result.output
    assert codat.state()["requests"] == []
    assert not (tmp_path / "processor.db").exists()


def test_replay_in_a_loop_while_serve_follows_the_customer(codat: Codat, serve: Serve) -> None:
    company = codat.create_company("Busy Ltd")
    connection = codat.create_connection(company["id"], "gbol")
    company_id, connection_id = company["id"], connection["id"]
    wait_for(lambda: serve.state_of(company_id) == "pending_auth", what="pending_auth")
    results: list[Result] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop(cli: Cli, *selector: str) -> None:
        try:
            while not stop.is_set():
                results.append(cli.run("replay", *selector))
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    # Two loops, so that replays also overlap each other, not only serve: one of the company,
    # and one of every company, planned by helper processes (whose plans serve's writes make
    # stale, to be read again in the transaction).
    replays = [
        threading.Thread(
            target=loop, args=(Cli.beside(serve, codat.url), "--company", company_id), daemon=True
        ),
        threading.Thread(
            target=loop, args=(Cli.beside(serve, codat.url, REPLAY_PROCESSES="2"),), daemon=True
        ),
    ]
    for thread in replays:
        thread.start()

    def after_another_replay() -> None:
        """Let at least one whole replay run against the state the customer just made."""
        seen = len(results)
        wait_for(lambda: len(results) >= seen + 3, timeout=30, what="another replay")

    try:
        wait_for(lambda: results, timeout=20, what="a first replay")
        codat.authorize(company_id, connection_id)
        serve.wait_state(company_id, "ready")
        after_another_replay()
        unlinked = codat.http.patch(
            f"/companies/{company_id}/connections/{connection_id}", json={"status": "Unlinked"}
        )
        assert unlinked.status_code == 200, unlinked.text
        serve.wait_state(company_id, "disconnected")
        after_another_replay()
        codat.authorize(company_id, connection_id)  # reauthorize: connection.reconnected
        serve.wait_state(company_id, "ready")
        codat.admin("POST", f"/companies/{company_id}/connections/{connection_id}/deauthorize")
        after_another_replay()
        serve.wait_state(company_id, "disconnected")
        codat.authorize(company_id, connection_id)
        after_another_replay()
    finally:
        stop.set()
        for thread in replays:
            thread.join(60)
    assert not any(thread.is_alive() for thread in replays)
    assert errors == []
    for result in results:
        assert result.returncode == 0, result.describe()
    # On SQLite the full replays were planned by helpers (PostgreSQL has none: it cannot tell
    # whether another process wrote meanwhile).
    helped = [r for r in results if '"helpers": 2' in r.stderr]
    assert bool(helped) == serve.database_url.startswith("sqlite"), len(helped)

    document = serve.wait_state(company_id, "ready")
    assert document["accountingConnection"]["status"] == "Linked"
    assert document["pendingEvents"] == 0 and document["failed"] == []
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]
    # What the customer did, written out: linked (Xero), the partner connection, unlinked,
    # relinked, deauthorized, relinked.
    state, data = stored_state(serve.database_url, company_id)
    assert state == "ready" and data is not None
    assert {key: value for key, value in data.items() if key != "watermarks"} == {
        "company_id": company_id,
        "name": "Busy Ltd",
        "deleted": False,
        "accounting_connection": {
            "id": connection_id,
            "status": "Linked",
            "platform_key": "gbol",
            "platform_name": "Xero",
            "source_type": "Accounting",
        },
        "expense_connection": {
            "id": partner["id"],
            "status": "Linked",
            "platform_key": partner["integrationKey"],
            "platform_name": partner["platformName"],
            "source_type": "Expense",
        },
        "last_error": None,
        "last_error_at": None,
        # Codat never read the data (the stand-in sends no read here): nothing configured.
        "data_reads": {},
        "configuration": None,
        # No expense sync was reported.
        "syncs": [],
        "earlier_successful_at": None,
        "earlier_failed_at": None,
    }
    assert {connection_id, partner["id"]} <= set(data["watermarks"])
    # One last replay, with serve idle, changes nothing.
    before = stored_state(serve.database_url, company_id)
    final = Cli.beside(serve, codat.url).ok("replay", "--company", company_id)
    assert "0 changed state, 0 commands run" in final.stdout, final.describe()
    assert stored_state(serve.database_url, company_id) == before
    assert len(partner_connections(codat.state(), company_id)) == 1


def test_replay_killed_half_way_then_run_again_creates_each_connection_once(
    tmp_path: Path, codat: Codat
) -> None:
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    # A Codat timeout longer than the hold below: the killed replay waits for Codat's answer.
    cli = Cli(tmp_path / "processor.db", codat.url, CODAT_TIMEOUT_SECONDS="10")
    count = 10
    names = [f"Killed Replay {n:02d} Ltd" for n in range(count)]
    onboarded = [cli.onboard(name) for name in names[:1]]  # creates the database
    with ThreadPoolExecutor(6) as pool:
        onboarded += list(pool.map(cli.onboard, names[1:]))
    ids = [o["companyId"] for o in onboarded]
    for item in onboarded:
        codat.authorize(item["companyId"], item["connectionId"])
    reconciled = cli.ok("reconcile")
    assert f"checked {count} companies" in reconciled.stdout, reconciled.describe()
    assert all(stored_state(cli.database_url, c)[0] == "linked" for c in ids)

    # The first two POSTs go through; the next one creates the connection and Codat holds its
    # answer (holdAfterCreate): the replay is killed while it waits for it.
    codat.faults(
        [
            {"method": "POST", "path": PARTNER_EXPENSE_PATH, "times": 2},
            {"method": "POST", "path": PARTNER_EXPENSE_PATH, "holdAfterCreate": 2.5, "times": 1},
        ]
    )
    process = cli.popen("replay")

    def created() -> int:
        state = codat.state()
        return sum(len(partner_connections(state, c)) for c in ids)

    def held() -> list[dict[str, Any]]:
        posts = requests_to(codat, "POST", "/partnerExpense")
        return [r for r in posts if r["status"] is None and r["fault"]["holdAfterCreate"]]

    try:
        [in_flight] = wait_for(held, 30, 0.01, what="the replay's third POST, held")
        company_of_held = in_flight["path"].split("/")[2]
        wait_for(
            lambda: partner_connections(codat.state(), company_of_held),
            10,
            0.01,
            what="Codat to create the held POST's connection",
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    # Killed in the window: Codat created the third connection and still held its answer;
    # the replay had recorded the first two only.
    assert [r["status"] for r in requests_to(codat, "POST", in_flight["path"])] == [None]
    half = created()
    assert half == 3, "the replay was meant to be killed a third of the way"
    states = [stored_state(cli.database_url, c)[0] for c in ids]
    assert states.count("ready") == 2 and states.count("linked") == count - 2, states
    assert stored_state(cli.database_url, company_of_held)[0] == "linked"

    # Run again, twice at once so the two also race each other for every company's command.
    # Codat answers at full speed now; the killed replay's claims are released (its pid is gone).
    codat.admin("DELETE", "/faults")
    reruns = [cli.popen("replay") for _ in range(2)]
    for rerun in reruns:
        stdout, stderr = rerun.communicate(timeout=90)
        assert rerun.returncode == 0, (stdout, stderr)
        assert f"of {count} companies" in stdout and "0 failures" in stdout, (stdout, stderr)

    state = codat.state()
    for company_id in ids:
        assert len(partner_connections(state, company_id)) == 1, company_id
        stored, data = stored_state(cli.database_url, company_id)
        assert stored == "ready", (company_id, stored)
        assert data is not None
        assert data["expense_connection"]["id"] == partner_connections(state, company_id)[0]["id"]
    assert cli.ok("status", "--state", "linked", "--json").json() == {"companies": []}
    # The rerun adopted what Codat created for the killed replay: no second POST for it.
    assert len(requests_to(codat, "POST", in_flight["path"])) == 1
    store = open_db(cli.database, readonly=True)
    try:
        for company_id in ids:
            assert store.open_effects(company_id) == [], company_id
            done = [e for e in store.company_effects(company_id) if e.status == "done"]
            assert len(done) == 1, (company_id, store.company_effects(company_id))
            note = (done[0].result or {}).get("note")
            assert note == ("adopted" if company_id == company_of_held else "created"), done
    finally:
        store.close()
    wait_for(
        lambda: not [r for r in codat.state()["requests"] if r["status"] is None],
        10,
        what="Codat to answer the POST it held",
    )
    # A third run finds nothing left to do.
    third = cli.ok("replay")
    assert "0 changed state, 0 commands run, 0 failures" in third.stdout, third.describe()
    assert sum(len(partner_connections(codat.state(), c)) for c in ids) == count


def test_replay_refuses_a_database_that_does_not_exist(tmp_path: Path, codat: Codat) -> None:
    missing = tmp_path / "typo.db"
    cli = Cli(missing, codat.url)
    for extra in (["--dry-run"], []):
        result = cli.run("replay", *extra)
        assert result.returncode == 2, result.describe()
        assert str(missing) in result.stderr and "does not exist" in result.stderr, (
            result.describe()
        )
        assert not missing.exists(), "a mistyped DATABASE_URL must not create an empty database"

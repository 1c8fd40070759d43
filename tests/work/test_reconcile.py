"""Reconciliation: lost webhooks healed by asking Codat, from the command line or serve's sweep.

The stand-in stops sending webhooks (`autoWebhooks: false`) before the customer authorizes, so
the processor only learns of the Linked connection by asking Codat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from processor import clock
from tests.cli_support import Cli, requests_to, stored_state
from tests.conftest import Codat
from tests.support import Serve, ServeThread, partner_connections, wait_for

# Reconciliation beside a `serve` on each backend (see tests/conftest.py).
pytestmark = pytest.mark.backends("sqlite", "postgres")


def serve_with(
    tmp_path: Path, codat: Codat, secret: str, port: int, sweep_every: str, database_url: str
) -> ServeThread:
    return ServeThread(
        tmp_path / "processor.db",
        {
            "CODAT_API_KEY": codat.server.api_key,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
            "RECONCILE_INTERVAL_SECONDS": sweep_every,
        },
        port=port,
        database_url=database_url,
    )


@pytest.fixture
def sweeping(
    tmp_path: Path, codat: Codat, secret: str, serve_port: int, database_url: str
) -> Iterator[Serve]:
    """`serve` with its periodic reconciliation sweep every second."""
    with serve_with(tmp_path, codat, secret, serve_port, "1", database_url) as server:
        yield server


@pytest.fixture
def unswept(
    tmp_path: Path, codat: Codat, secret: str, serve_port: int, database_url: str
) -> Iterator[Serve]:
    """`serve` without its sweep: only the `reconcile` command asks Codat."""
    with serve_with(tmp_path, codat, secret, serve_port, "0", database_url) as server:
        yield server


def pending(codat: Codat, serve: Serve, name: str) -> dict[str, Any]:
    """A company serve knows as pending_auth."""
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    return {"company": company, "connection": connection}


def authorized_silently(codat: Codat, serve: Serve, name: str) -> dict[str, Any]:
    """A company serve knows as pending_auth, whose connection.connected was never sent."""
    made = pending(codat, serve, name)
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    codat.authorize(made["company"]["id"], made["connection"]["id"])
    generated = [e["eventType"] for e in codat.state()["events"]]
    assert generated[-1] == "connection.connected", generated
    return made


def listings(codat: Codat, company_id: str) -> int:
    """How many times Codat answered a listing of the company's connections."""
    path = f"/companies/{company_id}/connections"
    return sum(1 for r in requests_to(codat, "GET", path) if r["path"] == path and r["status"])


def connected_deliveries(codat: Codat) -> list[dict[str, Any]]:
    return [d for d in codat.state()["deliveries"] if d["eventType"] == "connection.connected"]


def test_reconcile_command_heals_a_lost_connected_webhook(codat: Codat, unswept: Serve) -> None:
    serve = unswept
    made = authorized_silently(codat, serve, "Lost Webhook Ltd")
    company_id = made["company"]["id"]
    # Codat generated connection.connected but never sent it: serve cannot know.
    assert connected_deliveries(codat) == []
    assert serve.state_of(company_id) == "pending_auth"
    assert listings(codat, company_id) == 0

    cli = Cli.beside(serve, codat.url)
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


def test_an_observation_is_dated_when_codat_was_asked(codat: Codat, unswept: Serve) -> None:
    """What the listing answered is dated when it was asked, not when the answer came: a
    webhook generated while a slow listing was under way is newer and wins over it (a sweep's
    stale Linked once brought a company that had just been disconnected back to ready)."""
    serve = unswept
    company_id = authorized_silently(codat, serve, "Slow Listing Ltd")["company"]["id"]
    listing = f"/companies/{company_id}/connections"
    codat.faults([{"method": "GET", "path": listing, "delay": 1.0, "times": 1}])
    asked = clock.now()
    Cli.beside(serve, codat.url).ok("reconcile", "--company", company_id)

    document = serve.wait_state(company_id, "ready")
    [observed] = [e for e in document["events"] if e["source"] == "reconcile"]
    # Recorded once the answer came, at least the listing's 1 s delay after it was asked (the
    # command's own start-up, slow on a busy machine, is before it asks: not a bound).
    answered_by = clock.after(-0.9, clock.parse(observed["receivedAt"]))
    assert asked <= observed["generatedDate"] <= answered_by, (asked, observed)


def test_serve_sweep_heals_a_lost_connected_webhook(codat: Codat, sweeping: Serve) -> None:
    # A company that never gets further: each sweep lists its connections, so its listings
    # count the sweeps.
    witness = pending(codat, sweeping, "Still Pending Ltd")["company"]["id"]
    made = authorized_silently(codat, sweeping, "Swept Ltd")
    company_id = made["company"]["id"]
    document = sweeping.wait_state(company_id, "ready", timeout=20)
    assert connected_deliveries(codat) == []
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]
    assert any(e["source"] == "reconcile" for e in document["events"])

    # Later sweeps leave a ready company alone (checked within the day) and create nothing.
    # Sweeps run one after another, the witness first; once it is listed twice more, the sweep
    # that may have been under way when the company became ready is over; once it is listed
    # again, a whole sweep begun after that has run.
    def sweeps_after(count: int) -> int:
        wait_for(lambda: listings(codat, witness) >= count, timeout=15, what=f"{count} sweeps")
        return count

    seen = sweeps_after(listings(codat, witness) + 2)
    listed = listings(codat, company_id)
    sweeps_after(seen + 1)
    assert listings(codat, company_id) == listed
    assert len(partner_connections(codat.state(), company_id)) == 1
    assert sweeping.state_of(company_id) == "ready"
    assert sweeping.state_of(witness) == "pending_auth"


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
    assert stored_state(cli.database_url, gone)[0] == "deleted"
    assert stored_state(cli.database_url, kept)[0] == "pending_auth"
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
                "retryAfter": "1",
                "times": 1,
            }
        ]
    )
    started = time.monotonic()
    result = cli.ok("reconcile")
    elapsed = time.monotonic() - started
    assert "1 corrected, 0 errors" in result.stdout, result.describe()
    assert elapsed >= 1.0, elapsed
    lists = requests_to(codat, "GET", f"/companies/{company_id}/connections")
    assert [r["status"] for r in lists] == [429, 200]
    assert stored_state(cli.database_url, company_id)[0] == "linked"


def test_ready_and_configured_companies_are_swept_once_a_day_the_others_every_time(
    tmp_path: Path,
) -> None:
    from processor import clock
    from processor.work.reconcile import due_companies
    from store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'due.db'}")
    now = clock.now()
    yesterday = clock.format_datetime(clock.parse(now) - timedelta(days=1, seconds=1))
    states = ("pending_auth", "linked", "ready", "awaiting_configuration", "configured")
    try:
        with store.transaction():
            for state in (*states, "deleted"):
                for when in ("fresh", "old"):
                    company_id = f"{state}-{when}"
                    store.save_company(company_id, state, {"company_id": company_id}, now)
                    store.mark_checked(company_id, now if when == "fresh" else yesterday)
        due = set(due_companies(store, now))
    finally:
        store.close()
    assert due == {
        "pending_auth-fresh", "pending_auth-old", "linked-fresh", "linked-old",
        "awaiting_configuration-fresh", "awaiting_configuration-old",
        "ready-old", "configured-old",
    }  # fmt: skip


# --- Syncs read once a day; Codat's rate limit (issue 14) -------------------------------------


def test_configured_companies_have_their_syncs_read_once_a_day(tmp_path: Path) -> None:
    from processor import clock
    from processor.work.reconcile import sync_due_companies
    from store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'due.db'}")
    now = clock.now()
    yesterday = clock.format_datetime(clock.parse(now) - timedelta(days=1, seconds=1))
    try:
        with store.transaction():
            for state in ("ready", "awaiting_configuration", "configured"):
                for when in ("fresh", "old", "never"):
                    company_id = f"{state}-{when}"
                    store.save_company(company_id, state, {"company_id": company_id}, now)
                    if when != "never":
                        store.mark_sync_checked(company_id, now if when == "fresh" else yesterday)
        due = set(sync_due_companies(store, now))
    finally:
        store.close()
    assert due == {"configured-old", "configured-never"}


def _notice(event_type: str, generated: str, **rate_limit: Any) -> Any:
    from processor.work.synthetic import synthetic_event

    event = synthetic_event(
        message_id=f"{event_type}:{generated}",
        event_type=event_type,
        source="webhook",
        company_id="",
        fields={"rateLimit": rate_limit},
        body={},
        generated_date=generated,
    )
    return replace(event, company_id=None, outcome="ignored")


def test_rate_limit_notices_pause_in_their_order_whatever_order_they_arrive_in(
    tmp_path: Path,
) -> None:
    from processor import clock
    from processor.work import ratelimits
    from store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'pause.db'}")
    start = clock.parse(clock.now())

    def at(minutes: float) -> str:
        return clock.format_datetime(start + timedelta(minutes=minutes))

    def refresh(now: float) -> Any:
        with store.transaction():
            return ratelimits.refresh(store, at(now))

    try:
        assert refresh(0) is None
        with store.transaction():
            store.append_events([_notice(ratelimits.REACHED, at(0), expiryDate=at(60))])
        pause = refresh(1)
        assert pause is not None and (pause.until, pause.since) == (at(60), at(0))
        # A reset generated before the notice it would end, delivered late: changes nothing.
        with store.transaction():
            store.append_events([_notice(ratelimits.RESET, at(-5))])
        assert refresh(2) == pause
        # A 429 while paused, with a shorter Retry-After: the longer pause stands.
        with store.transaction():
            assert ratelimits.pause_for_429(store, 30, "a test call", at(3)).until == at(60)
        with store.transaction():
            store.append_events([_notice(ratelimits.RESET, at(10))])
        assert refresh(11) is None
        # A 429 after the reset: paused until Retry-After.
        with store.transaction():
            ratelimits.pause_for_429(store, 120, "a test call", at(12))
        assert refresh(13) is not None and refresh(15) is None
        # A notice without its expiry: a day, Codat's quota being daily.
        with store.transaction():
            store.append_events([_notice(ratelimits.REACHED, at(20))])
        assert refresh(21).until == at(20 + 24 * 60)
    finally:
        store.close()

"""Codat's rate limit (issue 14) over real HTTP: the stand-in sends `client.rateLimit.reached`
to a running `serve` that sweeps every second; the sweep and the other non-urgent calls stop
until `client.rateLimit.reset`, while a company that links meanwhile still gets its partner
expense connection. `/healthz` and the metrics say so while the pause lasts."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.cli_support import requests_to
from tests.conftest import Codat
from tests.support import TOKEN, Serve, partner_connections, wait_for

pytestmark = [
    pytest.mark.backends("sqlite", "postgres"),
    pytest.mark.serve_env(RECONCILE_INTERVAL_SECONDS="1"),
]
SWEEPS_WATCHED = 3.5  # seconds: three sweeps or more


def healthz(serve: Serve) -> dict[str, Any]:
    return dict(httpx.get(f"{serve.url}/healthz", timeout=10).json())


def metric(serve: Serve, name: str) -> float | None:
    answer = httpx.get(
        f"{serve.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    for line in answer.text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def listings(codat: Codat, company_id: str) -> int:
    path = f"/companies/{company_id}/connections"
    return sum(1 for r in requests_to(codat, "GET", path) if r["path"] == path)


def pending(codat: Codat, serve: Serve, name: str) -> dict[str, Any]:
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    return {"company": company["id"], "connection": connection["id"]}


def test_rate_limit_pauses_the_sweep_not_the_partner_connection(codat: Codat, serve: Serve) -> None:
    assert healthz(serve)["status"] == "ok"
    # B's customer authorizes while Codat sends nothing: only the sweep can find it.
    silent = pending(codat, serve, "Silent Ltd")
    linking = pending(codat, serve, "Linking Ltd")
    codat.admin("POST", "/rateLimit", json={"event": "reached"})
    wait_for(lambda: healthz(serve)["status"] == "degraded", what="/healthz to show the pause")
    reason = healthz(serve)["reason"]
    assert "rate limit" in reason and "client.rateLimit.reached" in reason, reason
    assert metric(serve, "codat_expenses_rate_limit_paused") == 1.0
    codat.admin("POST", "/config", json={"autoWebhooks": False})
    codat.authorize(silent["company"], silent["connection"])
    codat.admin("POST", "/config", json={"autoWebhooks": True})
    listed = listings(codat, silent["company"])

    # The other customer links with Codat's webhook: its partner expense connection is made.
    codat.authorize(linking["company"], linking["connection"])
    serve.wait_state(linking["company"], "ready")
    assert len(partner_connections(codat.state(), linking["company"])) == 1

    time.sleep(SWEEPS_WATCHED)
    assert serve.state_of(silent["company"]) == "pending_auth", "swept during the pause"
    assert listings(codat, silent["company"]) == listed
    paused = metric(serve, "codat_expenses_rate_limit_paused_seconds_total")
    assert paused is not None and paused >= SWEEPS_WATCHED - 1, paused

    codat.admin("POST", "/rateLimit", json={"event": "reset"})
    serve.wait_state(silent["company"], "ready")
    wait_for(lambda: healthz(serve)["status"] == "ok", what="/healthz back to ok")
    assert metric(serve, "codat_expenses_rate_limit_paused") == 0.0
    assert (metric(serve, "codat_expenses_reconciliation_runs_total") or 0) >= 1
    assert (metric(serve, "codat_expenses_reconciliation_corrections_total") or 0) >= 1


def test_a_429_pauses_until_retry_after_and_the_partner_connection_retries(
    codat: Codat, serve: Serve
) -> None:
    linking = pending(codat, serve, "Throttled Ltd")
    partner = f"/companies/{linking['company']}/sync/expenses/connections/partnerExpense"
    codat.faults(
        [{"method": "POST", "path": partner, "status": 429, "retryAfter": "2", "times": 1}]
    )
    codat.authorize(linking["company"], linking["connection"])
    wait_for(lambda: healthz(serve)["status"] == "degraded", what="the 429's pause")
    assert "Retry-After 2 s" in healthz(serve)["reason"]
    serve.wait_state(linking["company"], "ready")
    posts = [r["status"] for r in requests_to(codat, "POST", partner)]
    assert posts == [429, 200], posts
    wait_for(lambda: healthz(serve)["status"] == "ok", what="the pause to end", timeout=10)

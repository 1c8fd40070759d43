"""What an operator sees of a scripted scenario: the counters and gauges at `/metrics`, and the
JSON log lines of `serve`, with no secret anywhere.

The scenario, against the stand-in for Codat: two companies onboarded to `ready` (Codat's
webhooks, then the worker's three calls each), one company left waiting for Link, one
webhook delivered twice, one with a bad signature, one malformed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from processor.sandbox.sender import generate_secret, new_message_id
from processor.sandbox.webhook_bodies import company_event, new_company
from tests.cli_support import ready_with_serve
from tests.conftest import Codat
from tests.support import API_KEY, TOKEN, ServeProcess, post_webhook, wait_for

pytestmark = [pytest.mark.serve_process, pytest.mark.backends("sqlite", "postgres")]
METRICS_TOKEN = "metrics-token-for-the-scraper-42"
Samples = dict[tuple[str, tuple[Any, ...]], float]


@dataclass
class Scenario:
    serve: ServeProcess
    ready: list[str]
    waiting: str
    secret: str
    resent_id: str


@pytest.fixture
def scenario(codat: Codat, serve: ServeProcess, secret: str) -> Scenario:
    ready = [ready_with_serve(codat, serve, name)["company"]["id"] for name in ("A Ltd", "B plc")]
    waiting = codat.create_company("Waiting Ltd")
    codat.create_connection(waiting["id"], "gbol")
    wait_for(lambda: serve.state_of(waiting["id"]) == "pending_auth", what="pending_auth")
    body = company_event("company.created", new_company("Twice Ltd"))
    resent = new_message_id()
    for _ in range(2):
        assert post_webhook(serve.url, body, secret, message_id=resent).status_code == 200
    forged = post_webhook(serve.url, body, generate_secret(), message_id=new_message_id())
    assert forged.status_code == 401
    broken = post_webhook(serve.url, b"{not json", secret, message_id=new_message_id())
    assert broken.status_code == 400
    for company_id in ready:
        serve.wait_state(company_id, "ready")
    return Scenario(serve, ready, waiting["id"], secret, resent)


def scrape(serve: ServeProcess, token: str = METRICS_TOKEN) -> Samples:
    answer = httpx.get(
        f"{serve.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.serve_env(METRICS_TOKEN=METRICS_TOKEN, RECONCILE_INTERVAL_SECONDS="0")
def test_the_metrics_count_what_the_scenario_did(scenario: Scenario) -> None:
    serve = scenario.serve
    samples = scrape(serve)
    p = "codat_expenses_"
    stored = value(samples, f"{p}webhooks_received_total", outcome="stored", reason="")
    # Per ready company: company.created, connection.created, connection.connected, and the
    # partner connection's own connection.created from the stand-in; the waiting company two;
    # the resent message once; nothing else was sent.
    assert stored >= 2 * 3 + 2 + 1, samples
    assert value(samples, f"{p}webhooks_received_total", outcome="duplicate", reason="") == 1
    assert (
        value(samples, f"{p}webhooks_received_total", outcome="rejected", reason="signature") == 1
    )
    assert (
        value(samples, f"{p}webhooks_received_total", outcome="rejected", reason="malformed") == 1
    )
    assert value(samples, f"{p}intake_seconds_count", outcome="stored") == stored
    assert value(samples, f"{p}partner_expense_connections_total", how="created") == 2
    assert (
        value(
            samples,
            f"{p}command_attempts_total",
            kind="create_partner_expense_connection",
            result="done",
        )
        == 2
    )
    post = "POST /companies/{id}/sync/expenses/connections/partnerExpense"
    assert value(samples, f"{p}codat_calls_total", operation=post, status="200") == 2
    assert value(samples, f"{p}codat_call_seconds_count", operation=post) == 2
    assert value(samples, f"{p}state_transitions_total", from_state="linked", to_state="ready") == 2
    # Codat's daily quota, as the stand-in's X-Rate-Limit-* headers said on serve's last call.
    limit = value(samples, f"{p}codat_quota_limit")
    assert limit >= 1000, samples
    assert 0 < value(samples, f"{p}codat_quota_remaining") < limit, samples
    # From the store, at the scrape.
    assert value(samples, f"{p}companies", state="ready") == 2
    assert value(samples, f"{p}companies", state="pending_auth") == 1
    assert value(samples, f"{p}companies", state="deleted") == 0
    assert value(samples, f"{p}events_pending") == 0
    assert value(samples, f"{p}commands_failed") == 0
    assert value(samples, f"{p}worker_lag_seconds") == 0
    # Only the metrics token opens them; the query API's token does not.
    refused = httpx.get(
        f"{serve.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert refused.status_code == 401 and "METRICS_TOKEN" in refused.json()["error"]


def log_lines(serve: ServeProcess) -> list[dict[str, Any]]:
    """Every line `serve` wrote, each parsed as JSON (a line that is not fails the test)."""
    lines = []
    for number, line in enumerate(serve.logs().splitlines(), 1):
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(parsed, dict) and {"level", "logger", "message", "timestamp"} <= set(
            parsed
        ), line
        lines.append(parsed)
    return lines


@pytest.mark.serve_env(METRICS_TOKEN=METRICS_TOKEN, LOG_FORMAT="json")
def test_every_log_line_is_json_and_tells_the_story_without_a_secret(
    scenario: Scenario,
) -> None:
    serve = scenario.serve
    scrape(serve)
    lines = log_lines(serve)
    webhooks = [line for line in lines if line["logger"] == "processor.http.webhooks"]
    stored = [line for line in webhooks if line.get("outcome") == "stored"]
    assert stored and all(
        {"message_id", "event_type", "company_id", "latency_ms"} <= set(line) for line in stored
    ), webhooks[:3]
    assert [line["message_id"] for line in webhooks if line.get("outcome") == "duplicate"] == [
        scenario.resent_id
    ]
    rejected = [line for line in webhooks if line.get("outcome") == "rejected"]
    assert sorted(line["reason"] for line in rejected) == ["malformed", "signature"], rejected
    moves = [
        line
        for line in lines
        if line["logger"] == "processor.work.worker" and line.get("to_state") == "ready"
    ]
    assert sorted(line["company_id"] for line in moves) == sorted(scenario.ready), moves
    assert {line["company_name"] for line in moves} == {"A Ltd", "B plc"}
    assert all(line["from_state"] == "linked" and line["cause"] for line in moves), moves
    calls = [line for line in lines if line["logger"] == "processor.codat.metered"]
    assert any(
        line["operation"].startswith("POST /companies/{id}/sync/expenses")
        and line["status"] == "200"
        and line["duration_ms"] >= 0
        for line in calls
    ), calls[:5]
    assert any(line["message"].startswith("codat-expenses ") for line in lines)  # start-up
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # one formatter for all
    everything = serve.logs()
    key = scenario.secret.removeprefix("whsec_")
    for secret in (API_KEY, scenario.secret, key, TOKEN, METRICS_TOKEN):
        assert secret not in everything, secret
    assert base64.b64encode(API_KEY.encode()).decode() not in everything
    assert "v1," not in everything  # no webhook signature


@pytest.mark.serve_env(METRICS_TOKEN="")
def test_metrics_are_refused_when_no_token_is_configured(serve: ServeProcess) -> None:
    answer = httpx.get(
        f"{serve.url}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 403 and "METRICS_TOKEN" in answer.json()["error"], answer.text

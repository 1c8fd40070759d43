"""A wrong signing secret noticed: refused webhooks logged (never a secret or a signature) and
counted, `/healthz` degraded until a webhook is accepted again; and the reconciliation sweep
that runs soon after `serve` starts, for what happened while it was down.

`serve` is a real process on loopback with a real SQLite file; webhooks are signed here with
real Svix signatures; Codat is the local stand-in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from processor.http.webhooks import STORE_UNAVAILABLE, TOO_LARGE
from processor.intake.health import WebhookHealth
from processor.intake.signature import SIGNATURE, TIMESTAMP
from processor.sandbox.sender import generate_secret, new_message_id, sign_headers
from processor.sandbox.webhook_bodies import company_event, encode, new_company
from processor.work.reconcile import FIRST_SWEEP_AFTER
from tests.cli_support import Cli, stored_state
from tests.conftest import Codat
from tests.support import API_KEY, ServeProcess, event_count, partner_connections, wait_for

NOWHERE = "http://127.0.0.1:9"  # company.created asks nothing of Codat
THRESHOLD = 3
CONFIGURED = generate_secret()  # what serve is told
CODATS = generate_secret()  # what Codat really signs with


@pytest.fixture
def misconfigured(tmp_path: Path) -> Iterator[ServeProcess]:
    env = {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": NOWHERE,
        "CODAT_WEBHOOK_SECRET": CONFIGURED,
        "WEBHOOK_REJECTION_THRESHOLD": str(THRESHOLD),
        "WEBHOOK_REJECTION_WINDOW_SECONDS": "60",
    }
    with ServeProcess(tmp_path / "processor.db", env) as process:
        yield process


def send(server: ServeProcess, secret: str, message_id: str) -> tuple[httpx.Response, str]:
    """POST a signed company.created; the answer and the signature header sent."""
    body = encode(company_event("company.created", new_company("Wrong Secret Ltd")))
    headers = sign_headers(secret, message_id, body)
    answer = httpx.post(f"{server.url}/webhooks/codat", content=body, headers=headers, timeout=10)
    return answer, headers["webhook-signature"]


def health(server: ServeProcess) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/healthz", timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def rejection_lines(server: ServeProcess) -> list[str]:
    """The messages of the rejection lines (off a terminal, each log line is a JSON object)."""
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    return [str(line["message"]) for line in lines if "webhook rejected" in line["message"]]


def logged(server: ServeProcess, message_id: str) -> list[str]:
    return [line for line in rejection_lines(server) if message_id in line]


def test_a_wrong_secret_is_logged_per_webhook_and_degrades_healthz_until_one_is_accepted(
    misconfigured: ServeProcess,
) -> None:
    server = misconfigured
    assert health(server) == {"status": "ok"}
    sent: dict[str, str] = {}
    for count in range(1, THRESHOLD + 1):
        message_id = new_message_id()
        answer, sent[message_id] = send(server, CODATS, message_id)
        assert answer.status_code == 401, answer.text
        assert "no signature" in answer.json()["error"], answer.text
        wait_for(partial(logged, server, message_id), timeout=10, what=f"{message_id} logged")
        if count < THRESHOLD:
            # Fewer refusals than the threshold: not yet a misconfiguration.
            assert health(server) == {"status": "ok"}, count

    lines = rejection_lines(server)
    for message_id in sent:
        [line] = [line for line in lines if message_id in line]
        assert line.endswith(f"webhook rejected: 401 signature, message '{message_id}'"), line
    log = server.logs()
    for secret in (CONFIGURED, CODATS):
        assert secret.removeprefix("whsec_") not in log
    for signature in sent.values():
        assert signature not in log
        assert signature.removeprefix("v1,") not in log
    assert event_count(server) == 0

    degraded = health(server)
    assert set(degraded) == {"status", "reason"}, degraded
    assert degraded["status"] == "degraded", degraded
    assert "CODAT_WEBHOOK_SECRET" in degraded["reason"], degraded
    assert f"{THRESHOLD} for their signature" in degraded["reason"], degraded

    # The secret is put right (Codat signs with what serve knows): accepted, and healthy again.
    answer, _ = send(server, CONFIGURED, new_message_id())
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "stored"
    assert health(server) == {"status": "ok"}
    assert len(rejection_lines(server)) == THRESHOLD


def test_a_malformed_signature_is_logged_without_its_value(misconfigured: ServeProcess) -> None:
    server = misconfigured
    message_id = new_message_id()
    body = encode(company_event("company.created", new_company("Malformed Ltd")))
    headers = sign_headers(CONFIGURED, message_id, body)
    shown = "v1,c2lnbmF0dXJlLXZhbHVl!notbase64"
    headers["webhook-signature"] = shown
    answer = httpx.post(f"{server.url}/webhooks/codat", content=body, headers=headers, timeout=10)
    assert answer.status_code == 400, answer.text
    assert shown in answer.json()["error"]  # the sender is told what was wrong...
    [line] = wait_for(lambda: rejection_lines(server), timeout=10, what="the log line")
    assert line.endswith(f"webhook rejected: 400 signature, message '{message_id}'"), line
    assert "c2lnbmF0dXJlLXZhbHVl" not in server.logs()  # ...the log is not


# -- WebhookHealth with an injected clock ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(threshold: int = 3, window: float = 60.0) -> tuple[WebhookHealth, Clock]:
    clock = Clock()
    return WebhookHealth(window=window, threshold=threshold, clock=clock), clock


def test_health_degrades_at_the_threshold_of_refusals_within_the_window() -> None:
    health, clock = tracker()
    for _ in range(2):
        health.rejected(SIGNATURE)
        clock.now += 1
    assert health.degraded() is None
    health.rejected(SIGNATURE)
    reason = health.degraded()
    assert reason is not None
    assert "CODAT_WEBHOOK_SECRET" in reason and "3 for their signature" in reason, reason
    assert "in the last 60 s" in reason, reason
    assert health.outcomes == {"rejected:signature": 3}


def test_health_forgets_refusals_older_than_the_window() -> None:
    health, clock = tracker()
    for _ in range(3):
        health.rejected(SIGNATURE)
        clock.now += 10
    assert health.degraded() is not None
    clock.now = 1000.0 + 60.0  # the first refusal is exactly one window old: still counted
    assert health.degraded() is not None
    clock.now += 0.5  # now it is older
    assert health.degraded() is None
    health.rejected(SIGNATURE)  # two recent again, plus this one
    assert health.degraded() is not None
    clock.now += 61
    assert health.degraded() is None


def test_an_accepted_webhook_ends_the_degradation_for_a_window() -> None:
    health, clock = tracker()
    for _ in range(3):
        health.rejected(SIGNATURE)
    assert health.degraded() is not None
    clock.now += 1
    health.accepted("stored")
    assert health.degraded() is None
    # Refusals right after an acceptance do not degrade while it is recent...
    for _ in range(5):
        clock.now += 1
        health.rejected(SIGNATURE)
    assert health.degraded() is None
    # ...and do once the acceptance is older than the window.
    clock.now += 55.5
    assert health.degraded() is not None
    assert health.outcomes["stored"] == 1 and health.outcomes["rejected:signature"] == 8


def test_timestamp_refusals_point_at_the_clock_and_other_refusals_do_not_count() -> None:
    health, _ = tracker()
    for other in ("malformed", TOO_LARGE, STORE_UNAVAILABLE) * 3:
        health.rejected(other)
    assert health.degraded() is None
    for _ in range(3):
        health.rejected(TIMESTAMP)
    clock_reason = health.degraded()
    assert clock_reason is not None
    assert "clock" in clock_reason and "NTP" in clock_reason, clock_reason
    assert "CODAT_WEBHOOK_SECRET" not in clock_reason, clock_reason
    # Mostly signatures again: the secret is the likelier cause.
    for _ in range(3):
        health.rejected(SIGNATURE)
    secret_reason = health.degraded()
    assert secret_reason is not None and "CODAT_WEBHOOK_SECRET" in secret_reason, secret_reason


# -- the sweep soon after start-up ----------------------------------------------------------------


def test_serve_sweeps_soon_after_start_up_not_an_interval_later(
    tmp_path: Path, codat: Codat, secret: str
) -> None:
    # Codat sends no webhook at all: what happened while serve was down is learnt by asking.
    codat.admin("POST", "/config", json={"autoWebhooks": False, "webhookUrl": NOWHERE})
    database = tmp_path / "processor.db"
    onboarded = Cli(database, codat.url).onboard("Authorized While Down Ltd")
    company_id, connection_id = onboarded["companyId"], onboarded["connectionId"]
    codat.authorize(company_id, connection_id)
    assert stored_state(database, company_id)[0] == "pending_auth"
    before = len(codat.state()["requests"])

    env = {"CODAT_API_KEY": API_KEY, "CODAT_BASE_URL": codat.url, "CODAT_WEBHOOK_SECRET": secret}
    server = ServeProcess(database, env)
    assert "RECONCILE_INTERVAL_SECONDS" not in server.env  # the default: 900 s
    with server:
        started = time.monotonic()
        document = server.wait_state(company_id, "ready", timeout=15)
        took = time.monotonic() - started
    assert took < 10, took
    assert FIRST_SWEEP_AFTER <= 2

    observed = [e for e in document["events"] if e["source"] == "reconcile"]
    assert [(e["eventType"], e["outcome"]) for e in observed] == [
        ("connection.observed", "applied")
    ], document["events"]
    [partner] = partner_connections(codat.state(), company_id)
    assert document["expenseConnection"]["id"] == partner["id"]
    assert codat.state()["deliveries"] == []

    # The first call serve made about the company is the sweep's listing of its connections;
    # only then did the worker confirm the connection and create the partner connection.
    made = [
        (r["method"], r["path"])
        for r in codat.state()["requests"][before:]
        if r["path"].startswith(f"/companies/{company_id}")
    ]
    assert made[0] == ("GET", f"/companies/{company_id}/connections"), made
    assert made[1] == ("GET", f"/companies/{company_id}/connections/{connection_id}"), made
    assert made[-1] == (
        "POST",
        f"/companies/{company_id}/sync/expenses/connections/partnerExpense",
    ), made

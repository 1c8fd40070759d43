"""The OpenAPI 3.1 document at /openapi.json: valid, and true of every answer the app gives.

`assert_documented(answer)` checks one real answer against the document (its status is
documented for its operation, and its body matches the schema); other tests may call it on
what they see. Here it is applied to every documented status code, each provoked over real
loopback HTTP, and schemathesis generates requests against a live server.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from processor.http.openapi import document
from processor.sandbox.sender import generate_secret, new_message_id
from processor.sandbox.webhook_bodies import company_event, new_company
from tests.support import API_KEY, TOKEN, Serve, ServeThread, post_webhook, wait_for

SECRET = generate_secret()
SEEN: set[tuple[str, str, str]] = set()
DOC_URI = "urn:codat-expenses:openapi"


@cache
def _registry() -> Registry[Any]:
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, DRAFT202012.create_resource(document())
    )
    return registry


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The documented template that `path` matches, and its operation for `method`."""
    for template, item in document()["paths"].items():
        pattern = re.sub(r"\\{[A-Za-z]+\\}", "[^?#]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def assert_documented(answer: httpx.Response) -> None:
    """`answer` is documented: its status for its operation, its content type and its body."""
    method, path = answer.request.method, answer.request.url.path
    template, operation = _operation(method, path)
    status = str(answer.status_code)
    assert status in operation["responses"], (
        f"{method} {template} answered {status}, documented: {sorted(operation['responses'])}: "
        f"{answer.text[:300]}"
    )
    SEEN.add((method, template, status))
    documented = operation["responses"][status]
    for header, spec in documented.get("headers", {}).items():
        if spec.get("required"):
            assert header.lower() in answer.headers, f"{method} {template} {status}: no {header}"
    content = documented.get("content", {})
    if not content:
        return
    media = answer.headers.get("content-type", "")
    assert media in content, f"{method} {template} {status}: {media!r}, documented {list(content)}"
    if media != "application/json":
        return
    pointer = _pointer("paths", template, method.lower(), "responses", status)
    schema = {"$ref": f"{DOC_URI}#/{pointer}/{_pointer('content', media, 'schema')}"}
    errors = list(Draft202012Validator(schema, registry=_registry()).iter_errors(answer.json()))
    assert not errors, f"{method} {template} {status}: {[e.message for e in errors][:3]}"


def _env(**extra: str) -> dict[str, str]:
    return {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": SECRET,
        "RECONCILE_INTERVAL_SECONDS": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    database = tmp_path_factory.mktemp("openapi") / "processor.db"
    with ServeThread(database, _env(DATABASE_BUSY_TIMEOUT_SECONDS="0.2")) as running:
        yield running


def _company(server: Serve) -> str:
    """A company the store knows, through a real signed webhook."""
    company = new_company("Openapi Ltd")
    answer = post_webhook(
        server.url,
        company_event("company.created", company),
        SECRET,
        message_id=new_message_id(),
    )
    assert_documented(answer)
    wait_for(lambda: server.state_of(company["id"]), what="the company to be folded")
    return str(company["id"])


@contextmanager
def _signed_in(server: Serve) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.post("/sign-in", data={"token": TOKEN})
        assert_documented(answer)
        assert answer.status_code == 303
        yield client


def test_the_document_is_valid_openapi_3_1_and_served_without_auth(server: Serve) -> None:
    answer = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    assert_documented(answer)
    served = answer.json()
    assert served["openapi"].startswith("3.1")
    validate(served)  # raises on anything that is not valid OpenAPI 3.1


def test_every_route_of_the_app_is_documented(server: Serve) -> None:
    from processor.app import create_app
    from processor.config import load

    routes = create_app(load(server.env)).routes
    paths = {re.sub(r"\{(\w+)(:\w+)?\}", "{}", getattr(route, "path", "")) for route in routes}
    documented = {re.sub(r"\{\w+\}", "{}", path) for path in document()["paths"]}
    # The one catch-all that answers a person's mistyped dashboard address.
    assert paths - documented == {"/dashboard/{}"}


def test_the_helper_refuses_an_answer_the_document_does_not_describe(server: Serve) -> None:
    answer = httpx.get(f"{server.url}/healthz", timeout=10)
    wrong = httpx.Response(200, json={"status": "fine"}, request=answer.request)
    with pytest.raises(AssertionError, match="healthz 200"):
        assert_documented(wrong)
    undocumented = httpx.Response(418, json={"error": "x"}, request=answer.request)
    with pytest.raises(AssertionError, match="answered 418"):
        assert_documented(undocumented)


def test_every_documented_status_code_is_seen_and_answers_as_documented(
    server: Serve, tmp_path: Path
) -> None:
    company = _company(server)
    url, bearer = server.url, {"Authorization": f"Bearer {TOKEN}"}
    webhook = f"{url}/webhooks/codat"
    body = company_event("company.created", new_company("Second Ltd"))
    answers = [
        post_webhook(url, body, SECRET, message_id=new_message_id()),
        httpx.post(webhook, json=body),
        post_webhook(url, body, generate_secret(), message_id=new_message_id()),
        post_webhook(url, b"{" + b" " * 300_000 + b"}", SECRET, message_id=new_message_id()),
        httpx.get(f"{url}/companies", headers=bearer),
        httpx.get(f"{url}/companies?limit=0", headers=bearer),
        httpx.get(f"{url}/companies"),
        httpx.get(f"{url}/companies/{company}", headers=bearer),
        httpx.get(f"{url}/companies/not%20an%20id", headers=bearer),
        httpx.get(f"{url}/companies/{uuid.uuid4()}", headers=bearer),
        httpx.get(f"{url}/companies/{company}"),
        *_options_answers(server, company),
        httpx.get(f"{url}/companies/{company}/syncs", headers=bearer),
        httpx.get(f"{url}/companies/{company}/syncs?limit=1001", headers=bearer),
        httpx.get(f"{url}/companies/{company}/syncs?cursor=not-a-cursor", headers=bearer),
        httpx.get(f"{url}/companies/not%20an%20id/syncs", headers=bearer),
        httpx.get(f"{url}/companies/{uuid.uuid4()}/syncs", headers=bearer),
        httpx.get(f"{url}/companies/{company}/syncs"),
        httpx.get(f"{url}/healthz"),
        httpx.get(f"{url}/metrics", headers=bearer),
        httpx.get(f"{url}/metrics"),
        httpx.get(f"{url}/openapi.json"),
        httpx.get(f"{url}/"),
        httpx.post(f"{url}/sign-in", data={"token": ""}),
        httpx.post(f"{url}/sign-in", data={"token": "not-the-token"}),
        httpx.post(f"{url}/sign-in", content=b"token=" + b"x" * 5000),
        httpx.post(f"{url}/sign-out"),
        httpx.post(f"{url}/sign-out", headers={"Sec-Fetch-Site": "cross-site"}),
        httpx.post(
            f"{url}/sign-in", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "same-site"}
        ),
        httpx.get(f"{url}/dashboard/companies"),
        httpx.get(f"{url}/dashboard/companies/{company}"),
    ]
    with _signed_in(server) as person:
        answers += [
            person.get("/"),
            person.get("/?linked_after=soon"),
            person.get("/?pending_auth_after=130601264d"),  # once a 500: timedelta overflow
            person.get("/dashboard/companies?state=ready"),
            person.get("/dashboard/companies?state=nowhere"),
            person.get(f"/dashboard/companies/{company}"),
            person.get("/dashboard/companies/not%20an%20id"),
            person.get(f"/dashboard/companies/{uuid.uuid4()}"),
        ]
    answers += _while_the_store_is_locked(server, body)
    answers += _on_a_server_without_tokens(tmp_path)
    for answer in answers:
        assert_documented(answer)
    documented = {
        (method.upper(), path, status)
        for path, item in document()["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
    }
    assert documented - SEEN == set(), "documented but never provoked"


def _options_answers(server: Serve, company: str) -> list[httpx.Response]:
    """GET .../options: 404 before the choices are stored, 200 after (a snapshot written to the
    store as the worker writes it), 400 for a malformed id, 401 without a token."""
    url, bearer = server.url, {"Authorization": f"Bearer {TOKEN}"}
    before = httpx.get(f"{url}/companies/{company}/options", headers=bearer)
    assert before.status_code == 404, before.text
    store = server.open_store(readonly=False)
    try:
        with store.transaction():
            snapshot = {
                "expenseProvider": "Partner Expense",
                "accounts": [{"id": "acc-1", "name": "Current", "isBankAccount": True}],
                "trackingCategories": [],
                "taxRates": [{"id": "tax-1", "name": "No VAT", "code": "NONE"}],
                "suppliers": [{"id": "sup-1", "name": "Rail", "status": "Active"}],
                "customers": [],
            }
            store.save_options(company, snapshot, "2026-11-24T06:07:16.0000000Z")
    finally:
        store.close()
    stored = httpx.get(f"{url}/companies/{company}/options", headers=bearer)
    assert stored.status_code == 200, stored.text
    assert [a["id"] for a in stored.json()["bankAccounts"]] == ["acc-1"]
    return [
        before,
        stored,
        httpx.get(f"{url}/companies/not%20an%20id/options", headers=bearer),
        httpx.get(f"{url}/companies/{uuid.uuid4()}/options", headers=bearer),
        httpx.get(f"{url}/companies/{company}/options"),
    ]


def _while_the_store_is_locked(server: Serve, body: dict[str, Any]) -> list[httpx.Response]:
    """Another connection holds the write lock: intake and /healthz answer 503."""
    holder = sqlite3.connect(server.database, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        webhook = post_webhook(server.url, body, SECRET, message_id=new_message_id())
        health = httpx.get(f"{server.url}/healthz", timeout=10)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (webhook.status_code, health.status_code) == (503, 503), (webhook.text, health.text)
    return [webhook, health]


def _on_a_server_without_tokens(tmp_path: Path) -> list[httpx.Response]:
    """STATUS_API_TOKEN empty: the query API answers 403, the sign-in form too; and a run of
    bad signatures makes /healthz say degraded."""
    env = _env(STATUS_API_TOKEN="", WEBHOOK_REJECTION_THRESHOLD="2")
    with ServeThread(tmp_path / "off.db", env) as off:
        answers = [
            httpx.get(f"{off.url}/companies", headers={"Authorization": f"Bearer {TOKEN}"}),
            httpx.get(f"{off.url}/companies/x", headers={"Authorization": f"Bearer {TOKEN}"}),
            httpx.get(
                f"{off.url}/companies/x/options", headers={"Authorization": f"Bearer {TOKEN}"}
            ),
            httpx.get(f"{off.url}/companies/x/syncs", headers={"Authorization": f"Bearer {TOKEN}"}),
            httpx.post(f"{off.url}/sign-in", data={"token": TOKEN}),
            httpx.get(f"{off.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}),
        ]
        for _ in range(2):
            answers.append(post_webhook(off.url, {}, generate_secret(), message_id="msg_x"))
        degraded = httpx.get(f"{off.url}/healthz")
        assert degraded.json()["status"] == "degraded", degraded.text
        return [*answers, degraded]


def test_schemathesis_finds_nothing_against_the_live_app(server: Serve, tmp_path: Path) -> None:
    """Generated requests against uvicorn on loopback, with the bearer token and a session
    cookie: no 5xx, every status code, content type and body as documented."""
    company = _company(server)
    with _signed_in(server) as person:
        cookie = "; ".join(f"{name}={value}" for name, value in person.cookies.items())
        # A real company's page is in the examples, besides the generated ids.
        assert person.get(f"/dashboard/companies/{company}").status_code == 200
    report = tmp_path / "report"
    started = time.monotonic()
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{server.url}/openapi.json",
            "--url",
            server.url,
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--header",
            f"Cookie: {cookie}",
            "--checks",
            "all",
            # A webhook the schema calls valid is still refused without a Svix signature,
            # which the document cannot express; every other check stays on.
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "25",
            "--max-time",
            "45",
            "--workers",
            "2",
            "--seed",
            "1",
            "--max-redirects",
            "0",
            "--report",
            "ndjson",
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,  # its .schemathesis/ cache lands there, not in the clone
    )
    elapsed = time.monotonic() - started
    print(f"schemathesis: {elapsed:.1f} s, exit {run.returncode}\n{run.stdout[-1500:]}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout, run.stdout[-3000:]
    assert json.dumps(TOKEN) not in server.logs()


def test_a_form_from_another_site_cannot_sign_in_or_out(server: Serve) -> None:
    """A page elsewhere cannot sign an operator in (with its own token) or out: browsers say
    where a form comes from (Sec-Fetch-Site). This dashboard's own forms, and clients that are
    no browsers, are let through."""
    for site in ("cross-site", "same-site"):
        refused = httpx.post(
            f"{server.url}/sign-in", data={"token": TOKEN}, headers={"Sec-Fetch-Site": site}
        )
        assert refused.status_code == 403, refused.text
        assert f"expected a form sent from this dashboard, found one from a {site} page" in (
            refused.text
        )
        assert "set-cookie" not in refused.headers
    with _signed_in(server) as person:
        kept = person.post("/sign-out", headers={"Sec-Fetch-Site": "cross-site"})
        assert kept.status_code == 403 and "set-cookie" not in kept.headers
        assert person.get("/").status_code == 200, "still signed in"
        own = person.post("/sign-out", headers={"Sec-Fetch-Site": "same-origin"})
        assert own.status_code == 303 and "set-cookie" in own.headers
    typed = httpx.post(
        f"{server.url}/sign-in", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "none"}
    )
    assert typed.status_code == 303 and "set-cookie" in typed.headers

"""The read-only query API over real loopback HTTP: bearer auth, validation, pagination."""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers.state import STATES
from processor.codat.client import basic_auth
from processor.sandbox import SandboxServer
from processor.sandbox.sender import generate_secret, new_message_id, sign_headers
from processor.sandbox.webhook_bodies import (
    company_event,
    connection_event,
    encode,
    new_company,
    new_connection,
)
from tests.cli_support import Cli, Result
from tests.support import (
    API_KEY,
    TOKEN,
    Serve,
    ServeProcess,
    ServeThread,
    assert_error,
    post_webhook,
    wait_for,
)

SECRETS = (generate_secret(), generate_secret())
COMPANIES = 7  # three pages of three: 3 + 3 + 1
SEEN_BY_NO_ONE = ("companies", "state", "events", "name", "accountingConnection")


def serve_env() -> dict[str, str]:
    return {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": " ".join(SECRETS),  # space-separated rotation
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_database_url: str) -> Iterator[Serve]:
    """`serve` on each backend in turn (`module_database_url`), shared by the module's tests."""
    database = tmp_path_factory.mktemp("queries") / "processor.db"
    with ServeThread(database, serve_env(), database_url=module_database_url) as running:
        yield running


@pytest.fixture(scope="module")
def disabled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A second server with STATUS_API_TOKEN set but empty: the query API is off."""
    database = tmp_path_factory.mktemp("queries-disabled") / "processor.db"
    with ServeThread(database, {**serve_env(), "STATUS_API_TOKEN": ""}) as running:
        yield running


@pytest.fixture(scope="module")
def anonymous(server: Serve) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def http(server: Serve) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def company_ids(server: Serve, http: httpx.Client) -> list[str]:
    """Companies created the way Codat announces them: signed `company.created` webhooks."""
    ids = []
    for number in range(COMPANIES):
        company = new_company(f"Query Test {number}")
        raw = encode(company_event("company.created", company))
        secret = SECRETS[number % 2]
        headers = sign_headers(secret, new_message_id(), raw)
        answer = http.post("/webhooks/codat", content=raw, headers=headers)
        assert answer.status_code == 200, answer.text
        ids.append(company["id"])
    for company_id in ids:
        wait_for(partial(folded, http, company_id), timeout=10, what=f"{company_id} folded")
    return sorted(ids)


def folded(http: httpx.Client, company_id: str) -> bool:
    answer = http.get(f"/companies/{company_id}")
    return answer.status_code == 200 and answer.json()["pendingEvents"] == 0


def paths(company_ids: list[str]) -> list[str]:
    return ["/companies", f"/companies/{company_ids[0]}"]


# -- bearer auth -----------------------------------------------------------------------------------


def test_the_right_token_reads_both_routes(http: httpx.Client, company_ids: list[str]) -> None:
    listing = http.get("/companies")
    assert listing.status_code == 200
    document = http.get(f"/companies/{company_ids[0]}")
    assert document.status_code == 200
    assert document.json()["id"] == company_ids[0]
    assert document.json()["state"] == "created"


@pytest.mark.parametrize("route", [0, 1], ids=["list", "one"])
def test_no_token_is_401_without_data(
    anonymous: httpx.Client, company_ids: list[str], route: int
) -> None:
    response = anonymous.get(paths(company_ids)[route])
    assert_error(response, 401, "expected an 'Authorization: Bearer <token>' header")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + "x" * len(TOKEN),
        "Bearer " + TOKEN[:-1] + chr(ord(TOKEN[-1]) + 1),
        "Bearer " + TOKEN[:-1],
        "Bearer " + TOKEN + "0",
        "Bearer " + TOKEN * 3,
        "Bearer a",
    ],
    ids=["same-length", "last-char", "shorter", "longer", "much-longer", "one-char"],
)
@pytest.mark.parametrize("route", [0, 1], ids=["list", "one"])
def test_wrong_token_is_401_without_data(
    anonymous: httpx.Client, company_ids: list[str], route: int, authorization: str
) -> None:
    response = anonymous.get(paths(company_ids)[route], headers={"Authorization": authorization})
    assert_error(response, 401, "not one of the configured STATUS_API_TOKEN")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    "authorization",
    [TOKEN, f"Basic {base64.b64encode(TOKEN.encode()).decode()}", f"Token {TOKEN}", "Bearer"],
    ids=["no-scheme", "basic", "token-scheme", "bearer-alone"],
)
def test_token_under_another_scheme_is_401(
    anonymous: httpx.Client, company_ids: list[str], authorization: str
) -> None:
    response = anonymous.get(
        f"/companies/{company_ids[0]}", headers={"Authorization": authorization}
    )
    assert_error(response, 401, "expected an 'Authorization: Bearer <token>' header")


@pytest.mark.parametrize("name", ["token", "access_token", "bearer", "STATUS_API_TOKEN"])
@pytest.mark.parametrize("route", [0, 1], ids=["list", "one"])
def test_token_in_the_query_string_is_401_without_data(
    anonymous: httpx.Client, company_ids: list[str], route: int, name: str
) -> None:
    response = anonymous.get(paths(company_ids)[route], params={name: TOKEN})
    assert_error(response, 401, "expected an 'Authorization: Bearer <token>' header")


@pytest.mark.parametrize("route", ["/companies", f"/companies/{uuid.uuid4()}"], ids=["list", "one"])
@pytest.mark.parametrize("authorization", [None, f"Bearer {TOKEN}"], ids=["no-token", "token"])
def test_query_api_without_configured_tokens_is_403_saying_how_to_enable_it(
    disabled: Serve, route: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{disabled.url}{route}", headers=headers, timeout=10)
    assert_error(response, 403, "disabled", "set STATUS_API_TOKEN")
    health = httpx.get(f"{disabled.url}/healthz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


# -- one company -----------------------------------------------------------------------------------


def test_unknown_company_is_404(http: httpx.Client, company_ids: list[str]) -> None:
    unknown = str(uuid.uuid4())
    assert_error(http.get(f"/companies/{unknown}"), 404, f"no company '{unknown}'")


def raw_get(server: Serve, target: str, authorization: str) -> tuple[int, dict[str, str], str]:
    """GET `target` byte for byte: an HTTP client would resolve `..` before sending it."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    data = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1"))
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body.decode()


@pytest.mark.parametrize(
    "raw_path",
    [
        "../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f",
        "%2e%2e%2f%2e%2e%2fhealthz",
        "%00",
        "{known}%00",
        "{known}%0a",
        "{known}/%2e%2e/{known}",
        "{known}/../{known}",
        "' OR 1=1 --",
        "%27%20OR%201%3D1%20--",
        "{known}' OR '1'='1",
        "soci%C3%A9t%C3%A9",
        "%F0%9F%98%80",
        "%ff%fe",
        "%252e%252e%252f",
        "a" * 101,
    ],
)
def test_path_tricks_in_company_ids_are_400_without_data(
    server: Serve, company_ids: list[str], raw_path: str
) -> None:
    """README: 400 for a malformed id (404 is for a well-formed id the store does not know).

    Sent over a raw socket so that the server sees exactly this path (only spaces escaped).
    """
    path = raw_path.replace("{known}", company_ids[0]).replace(" ", "%20")
    status, headers, text = raw_get(server, f"/companies/{path}", f"Bearer {TOKEN}")
    assert status == 400, text
    assert headers["content-type"] == "application/json"
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert body["error"].startswith("expected a Codat company id (a UUID), found "), body
    for field in SEEN_BY_NO_ONE:
        assert f'"{field}"' not in text


# -- the list --------------------------------------------------------------------------------------


def test_unknown_state_is_400_naming_the_valid_states(http: httpx.Client) -> None:
    message = assert_error(http.get("/companies", params={"state": "bogus"}), 400, "'bogus'")
    for state in STATES:
        assert state in message


@pytest.mark.parametrize(
    "limit",
    ["0", "abc", "-1", "1001", "1.5", "1e2", " 5", "", "\u00b2", "9" * 30],
    ids=[
        "zero",
        "word",
        "negative",
        "over-max",
        "float",
        "exponent",
        "space",
        "empty",
        "superscript-two",
        "huge",
    ],
)
def test_invalid_limit_is_400(http: httpx.Client, limit: str) -> None:
    response = http.get("/companies", params={"limit": limit})
    assert_error(response, 400, "expected limit between 1 and 1000")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "a",
        "\u00e9",
        base64.urlsafe_b64encode(b"../etc/passwd").decode(),
        base64.urlsafe_b64encode(b"' OR 1=1 --").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
    ids=["punctuation", "one-char", "non-ascii", "dot-dot", "sql", "not-utf8"],
)
def test_bad_cursor_is_400(http: httpx.Client, cursor: str) -> None:
    response = http.get("/companies", params={"cursor": cursor})
    assert_error(response, 400, "expected a cursor from a previous answer's 'next'")


@pytest.mark.parametrize("state", [None, "created"], ids=["any-state", "created"])
def test_pagination_returns_every_company_once_over_three_pages(
    http: httpx.Client, company_ids: list[str], state: str | None
) -> None:
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, str] = {"limit": "3", **({"state": state} if state else {})}
    while True:
        response = http.get("/companies", params=params)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) == {"companies", "next"}
        pages.append(answer["companies"])
        if answer["next"] is None:
            break
        params["cursor"] = answer["next"]
        assert len(pages) < 10, "pagination does not end"
    assert [len(page) for page in pages] == [3, 3, 1]
    seen = [company["id"] for page in pages for company in page]
    assert seen == company_ids  # each once, ordered by id
    assert {company["state"] for page in pages for company in page} == {"created"}


def test_state_with_no_companies_is_an_empty_page(
    http: httpx.Client, company_ids: list[str]
) -> None:
    response = http.get("/companies", params={"state": "ready"})
    assert (response.status_code, response.json()) == (200, {"companies": [], "next": None})


# -- health and secrets ----------------------------------------------------------------------------


def test_healthz_is_ok_without_auth_and_reveals_nothing(anonymous: httpx.Client) -> None:
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    for secret in (TOKEN, API_KEY, *SECRETS):
        assert secret not in response.text
        assert secret not in str(response.headers)


def secrets_in(text: str) -> list[str]:
    """Which of the token, the API key (also as sent, in Basic auth) or the webhook secrets
    (with or without their whsec_ prefix) appear in `text`."""
    forms = [TOKEN, API_KEY, basic_auth(API_KEY).removeprefix("Basic ")]
    forms += [form for secret in SECRETS for form in (secret, secret.removeprefix("whsec_"))]
    return [form for form in forms if form in text]


def carry_the_token_everywhere(url: str) -> None:
    """Requests with the token (or near misses) in the query, the path and odd schemes."""
    with httpx.Client(base_url=url, timeout=10) as client:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/companies", params={"token": TOKEN, "limit": "\u00b2"}).is_error
        assert client.get(f"/companies/{TOKEN}", headers=bearer).status_code == 404
        for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, basic_auth(TOKEN)):
            answer = client.get(f"/companies/{TOKEN}", headers={"Authorization": wrong})
            assert answer.status_code == 401


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_tokens_and_secrets_never_reach_the_log(
    server: Serve, disabled: Serve, tmp_path: Path
) -> None:
    """Runs last in this module, after requests that carried the token in every place; then a
    real `serve` process goes through paths that log errors (a process, not a thread: its log is
    everything it writes, uvicorn's lines and any traceback included, not only our loggers):
    Codat failing the worker's calls (500, retried, then 400, given up), the store locked under
    a webhook (503). Then `status`, `replay` and `reconcile` print Codat's errors. Neither the
    logs nor what the commands print holds the token, the API key or a webhook secret."""
    connections = "/companies/*/connections/*"
    with SandboxServer(api_key=API_KEY) as codat:

        def faults(*rules: dict[str, Any]) -> None:
            assert httpx.post(f"{codat.url}/_sandbox/faults", json=list(rules)).is_success

        database = tmp_path / "processor.db"
        env = {
            **serve_env(),
            "CODAT_BASE_URL": codat.url,
            "RECONCILE_INTERVAL_SECONDS": "0",
            "DATABASE_BUSY_TIMEOUT_SECONDS": "0.5",
        }
        company = new_company("Log Test Ltd")
        linked = new_connection(company["id"], "gbol", status="Linked")
        faults(
            {"method": "GET", "path": connections, "status": 500, "times": 2},
            {"method": "GET", "path": connections, "status": 400, "times": 1},
        )
        with ServeProcess(database, env) as process:
            for body in (
                company_event("company.created", company),
                connection_event("connection.connected", company, linked),
            ):
                answer = post_webhook(process.url, body, SECRETS[1], message_id=new_message_id())
                assert answer.status_code == 200, answer.text

            def failed() -> list[dict[str, Any]]:
                document = process.company(company["id"])
                return document["failed"] if document else []

            [dead] = wait_for(failed, timeout=15, what="the command to fail on Codat's 400")
            assert "Codat answered 400" in dead["lastError"]
            carry_the_token_everywhere(process.url)
            with write_locked(database):
                body = company_event("company.created", new_company("Locked Out Ltd"))
                answer = post_webhook(process.url, body, SECRETS[0], message_id=new_message_id())
                assert answer.status_code == 503, answer.text
        logs = process.logs()
        assert "Uvicorn running" in logs  # the log file is the one the process writes
        assert "Codat answered 500" in logs and "(will retry)" in logs
        assert "Codat answered 400" in logs and "(gave up)" in logs
        assert "503 store_unavailable" in logs and "database is locked" in logs

        cli = Cli(database, codat.url, STATUS_API_TOKEN=TOKEN)
        cli.env["CODAT_WEBHOOK_SECRET"] = " ".join(SECRETS)
        runs: list[Result] = [cli.ok("status", company["id"])]
        assert "Codat answered 400" in runs[0].output
        faults({"method": "GET", "path": connections, "status": 400, "times": 1})
        runs.append(cli.run("replay", "--company", company["id"]))
        assert runs[-1].returncode == 1, runs[-1].describe()
        assert "failed: " in runs[-1].stderr and "Codat answered 400" in runs[-1].stderr
        faults({"method": "GET", "path": "/companies/*/connections", "status": 500, "times": 1})
        runs.append(cli.run("reconcile", "--company", company["id"]))
        assert runs[-1].returncode == 1, runs[-1].describe()
        assert "error: " in runs[-1].stderr and "Codat answered 500" in runs[-1].stderr

    assert secrets_in(logs) == [], logs
    for run in runs:
        assert secrets_in(run.output) == [], run.describe()
    for running in (server, disabled):  # the thread-served apps' lines, after this module
        assert secrets_in(running.logs()) == [], running.logs()

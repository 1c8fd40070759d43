"""The Codat stand-in over real loopback HTTP: shapes, errors, idempotency, faults, webhooks."""

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

from processor.sandbox import LoopbackServer, SandboxServer
from processor.sandbox.sender import WebhookSender, generate_secret, sign_headers
from processor.sandbox.webhook_bodies import company_event, new_company
from tests.sandbox.codat_schemas import EXPENSES_DOC, PLATFORM_DOC, conform_to
from tests.support import wait_for

API_KEY = "sandbox-test-key"
AUTH = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
SECRET = generate_secret()
FAST_RETRIES = (0.0, 0.05, 0.1)
PARTNER_EXPENSE = "/companies/{}/sync/expenses/connections/partnerExpense"
HOLD = 1.5  # seconds the stand-in holds an answer: ample for a second request to overtake it


# --- Codat's schemas ------------------------------------------------------------------------


def conform(instance: Any, schema: str, document: str = EXPENSES_DOC) -> None:
    """Fail with every error of `instance` against `#/components/schemas/{schema}`."""
    conform_to(instance, f"/components/schemas/{schema}", document)


def conform_webhook(body: dict[str, Any]) -> None:
    pointer = f"/webhooks/{body['eventType']}/post/requestBody/content/application~1json/schema"
    conform_to(body, pointer, PLATFORM_DOC)


# --- A webhook receiver ---------------------------------------------------------------------


class Receiver:
    """A webhook consumer: verifies with svix, records, and fails the first `fail_first` tries."""

    def __init__(self, secret: str = SECRET, *, fail_first: int = 0) -> None:
        self.webhook = Webhook(secret)
        self.fail_first = fail_first
        self.attempts: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.rejected = 0
        self.app = Starlette(routes=[Route("/hook", self.receive, methods=["POST"])])
        self.url = ""

    async def receive(self, request: Request) -> Response:
        raw = await request.body()
        try:
            self.webhook.verify(raw, dict(request.headers))
        except WebhookVerificationError:
            self.rejected += 1
            return Response(status_code=400)
        self.attempts.append(dict(request.headers))
        if len(self.attempts) <= self.fail_first:
            return Response(status_code=500)
        self.bodies.append(json.loads(raw))
        return Response(status_code=204)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(api_key=API_KEY, retry_delays=FAST_RETRIES) as server:
        yield server


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, headers=AUTH, timeout=10) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with LoopbackServer(receiver.app) as server:
        receiver.url = server.url + "/hook"
        yield receiver


@pytest.fixture
def hooked(api: httpx.Client, receiver: Receiver) -> Receiver:
    """The sandbox sends its webhooks to `receiver`."""
    answer = api.post("/_sandbox/config", json={"webhookUrl": receiver.url, "secrets": [SECRET]})
    assert answer.status_code == 200, answer.text
    return receiver


def state(api: httpx.Client) -> dict[str, Any]:
    return dict(api.get("/_sandbox/state").json())


def settled(api: httpx.Client, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Wait for `count` webhook deliveries to finish; return all deliveries."""
    deadline = time.monotonic() + timeout
    while True:
        deliveries = state(api)["deliveries"]
        if len(deliveries) >= count and not any(d["pending"] for d in deliveries):
            return list(deliveries)
        assert time.monotonic() < deadline, f"deliveries did not settle: {deliveries}"
        time.sleep(0.02)


def in_flight(api: httpx.Client, method: str, path: str) -> list[dict[str, Any]]:
    """The requests the stand-in has received on `path` and not answered yet."""
    return [r for r in requests_to(api, method, path) if r["status"] is None]


def requests_to(api: httpx.Client, method: str, path: str) -> list[dict[str, Any]]:
    return [r for r in state(api)["requests"] if (r["method"], r["path"]) == (method, path)]


def company(api: httpx.Client, name: str = "Bank of Dave") -> dict[str, Any]:
    answer = api.post("/companies", json={"name": name})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def connection(api: httpx.Client, company_id: str, key: str = "gbol") -> dict[str, Any]:
    answer = api.post(f"/companies/{company_id}/connections", json={"platformKey": key})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def admin(api: httpx.Client, company_id: str, connection_id: str, action: str) -> httpx.Response:
    return api.post(f"/_sandbox/companies/{company_id}/connections/{connection_id}/{action}")


def faults(api: httpx.Client, *rules: dict[str, Any]) -> None:
    answer = api.post("/_sandbox/faults", json=list(rules))
    assert answer.status_code == 200, answer.text


def partner_expense_connections(api: httpx.Client, company_id: str) -> list[dict[str, Any]]:
    (record,) = [c for c in state(api)["companies"] if c["id"] == company_id]
    return [c for c in record["connections"] if c["sourceType"] == "Expense" and not c["deleted"]]


# --- Authentication and errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"wrong").decode()},
        {"Authorization": f"Bearer {API_KEY}"},
    ],
)
def test_wrong_or_missing_key_is_401_in_codat_shape(
    sandbox: SandboxServer, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=sandbox.url, headers=headers) as client:
        answer = client.post("/companies", json={"name": "x"})
    assert answer.status_code == 401
    body = answer.json()
    conform(body, "ErrorMessage")
    assert body["statusCode"] == 401 and isinstance(body["canBeRetried"], str)
    assert body["correlationId"] and "validation" in body and "detailedErrorCode" in body
    assert {"x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"} <= set(
        answer.headers
    )


def test_every_answer_carries_rate_limit_headers(api: httpx.Client) -> None:
    first = api.post("/companies", json={"name": "A"})
    second = api.get(f"/companies/{uuid.uuid4()}")
    for answer in (first, second):
        assert int(answer.headers["X-Rate-Limit-Limit"]) >= 1000
        assert answer.headers["X-Rate-Limit-Reset"]
    assert int(second.headers["X-Rate-Limit-Remaining"]) < int(
        first.headers["X-Rate-Limit-Remaining"]
    )


def test_the_daily_limit_follows_the_active_companies(api: httpx.Client) -> None:
    """1,000 x (1 + companies with a Linked live connection), kept at each change."""

    def limit() -> int:
        return int(api.get(f"/companies/{uuid.uuid4()}").headers["X-Rate-Limit-Limit"])

    pairs = []
    for name in ("A", "B"):
        company_id = api.post("/companies", json={"name": name}).json()["id"]
        connection = api.post(f"/companies/{company_id}/connections", json={"platformKey": "gbol"})
        pairs.append((company_id, connection.json()["id"]))
    assert limit() == 1000
    for count, (company_id, connection_id) in enumerate(pairs, start=2):
        admin(api, company_id, connection_id, "authorize")
        assert limit() == 1000 * count
    (first, first_connection), (second, second_connection) = pairs
    admin(api, first, first_connection, "deauthorize")
    assert limit() == 2000
    api.post(PARTNER_EXPENSE.format(first), headers={"Idempotency-Key": str(uuid.uuid4())})
    assert limit() == 3000  # the partner expense connection is Linked
    api.delete(f"/_sandbox/companies/{first}/connections/{first_connection}")
    assert limit() == 3000
    api.delete(f"/_sandbox/companies/{second}/connections/{second_connection}")
    assert limit() == 2000
    api.delete(f"/_sandbox/companies/{first}")
    assert limit() == 1000


# --- Companies and connections --------------------------------------------------------------


def test_create_and_get_company_in_codat_shape(api: httpx.Client) -> None:
    answer = api.post(
        "/companies",
        json={"name": "Bank <of> Dave #1!", "description": "ours-42", "tags": {"uid": "42"}},
    )
    assert answer.status_code == 200
    created = answer.json()
    conform(created, "Company")
    assert created["name"] == "Bank of Dave 1!"
    assert created["redirect"] == f"https://link.codat.io/company/{created['id']}"
    assert created["dataConnections"] == [] and created["tags"] == {"uid": "42"}
    fetched = api.get(f"/companies/{created['id']}")
    assert fetched.status_code == 200 and fetched.json() == created


@pytest.mark.parametrize(
    ("body", "item"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "  "}, "name"),
        ({"name": "###"}, "name"),
        ({"name": 7}, "name"),
        ({"name": "A", "tags": {"k": 1}}, "tags.k"),
    ],
)
def test_invalid_company_is_400_with_validation_errors(
    api: httpx.Client, body: dict[str, Any], item: str
) -> None:
    answer = api.post("/companies", json=body)
    assert answer.status_code == 400
    conform(answer.json(), "ErrorMessage")
    assert answer.json()["validation"]["errors"][0]["itemId"] == item


def test_malformed_json_is_400(api: httpx.Client) -> None:
    answer = api.post("/companies", content=b"{not json", headers={"content-type": "x"})
    assert answer.status_code == 400
    assert "JSON" in answer.json()["error"]


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    assert api.get(f"/companies/{missing}").status_code == 404
    assert (
        api.post(f"/companies/{missing}/connections", json={"platformKey": "gbol"}).status_code
        == 404
    )
    known = company(api)["id"]
    answer = api.get(f"/companies/{known}/connections/{missing}")
    assert answer.status_code == 404
    assert missing in answer.json()["error"]


def test_create_connection_in_codat_shape(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    created = connection(api, company_id, "qhyg")
    conform(created, "Connection")
    assert created["status"] == "PendingAuth" and created["sourceType"] == "Accounting"
    assert created["integrationKey"] == "qhyg" and created["platformName"] == "QuickBooks Online"
    assert created["linkUrl"].startswith("https://link-api.codat.io/companies/")
    fetched = api.get(f"/companies/{company_id}/connections/{created['id']}").json()
    assert fetched == created
    assert api.get(f"/companies/{company_id}").json()["dataConnections"] == [created]


@pytest.mark.parametrize("body", [{"platformKey": "zzzz"}, {"platformKey": "XERO"}, {}])
def test_unknown_platform_key_is_400(api: httpx.Client, body: dict[str, Any]) -> None:
    answer = api.post(f"/companies/{company(api)['id']}/connections", json=body)
    assert answer.status_code == 400
    assert answer.json()["validation"]["errors"][0]["itemId"] == "platformKey"


def test_list_connections_paginates(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    ids = [connection(api, company_id)["id"] for _ in range(5)]
    seen, page = [], 1
    while True:
        answer = api.get(f"/companies/{company_id}/connections?page={page}&pageSize=2")
        assert answer.status_code == 200
        body = answer.json()
        conform(body, "Connections")
        assert (body["pageNumber"], body["pageSize"], body["totalResults"]) == (page, 2, 5)
        assert ("previous" in body["_links"]) == (page > 1)
        seen += [c["id"] for c in body["results"]]
        if "next" not in body["_links"]:
            break
        assert body["_links"]["next"]["href"].endswith(f"page={page + 1}&pageSize=2")
        page += 1
    assert page == 3 and seen == ids
    beyond = api.get(f"/companies/{company_id}/connections?page=9&pageSize=2").json()
    assert beyond["results"] == [] and beyond["totalResults"] == 5


def test_list_connections_query_and_bad_paging(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    connection(api, company_id)
    api.post(PARTNER_EXPENSE.format(company_id))
    only = api.get(f"/companies/{company_id}/connections", params={"query": "sourceType=Expense"})
    assert [c["sourceType"] for c in only.json()["results"]] == ["Expense"]
    for query in ("page=0", "pageSize=0", "pageSize=x", "query=a>b"):
        assert api.get(f"/companies/{company_id}/connections?{query}").status_code == 400


def test_unlink_rules(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    created = connection(api, company_id)
    path = f"/companies/{company_id}/connections/{created['id']}"
    pending = api.patch(path, json={"status": "Unlinked"})
    assert pending.status_code == 400 and "PendingAuth" in pending.json()["error"]
    assert admin(api, company_id, created["id"], "authorize").json()["status"] == "Linked"
    for body in ({"status": "Linked"}, {"status": "Deauthorized"}, {}, {"status": None}):
        assert api.patch(path, json=body).status_code == 400
    unlinked = api.patch(path, json={"status": "Unlinked"})
    assert unlinked.status_code == 200
    conform(unlinked.json(), "Connection")
    assert unlinked.json()["status"] == "Unlinked"
    assert api.patch(path, json={"status": "Unlinked"}).status_code == 400
    assert admin(api, company_id, created["id"], "authorize").json()["status"] == "Linked"


def test_admin_deletes_hide_connections_and_companies(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    created = connection(api, company_id)
    path = f"/_sandbox/companies/{company_id}/connections/{created['id']}"
    assert api.delete(path).status_code == 204
    assert api.get(f"/companies/{company_id}/connections/{created['id']}").status_code == 404
    assert api.get(f"/companies/{company_id}/connections").json()["totalResults"] == 0
    (dumped,) = state(api)["companies"]
    assert dumped["connections"][0]["deleted"] is True
    assert api.delete(f"/_sandbox/companies/{company_id}").status_code == 204
    assert api.get(f"/companies/{company_id}").status_code == 404


# --- Partner expense connection and idempotency ---------------------------------------------


def test_partner_expense_connection_duplicates_without_a_key(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    first = api.post(PARTNER_EXPENSE.format(company_id))
    second = api.post(PARTNER_EXPENSE.format(company_id))
    assert first.status_code == second.status_code == 200
    for answer in (first, second):
        conform(answer.json(), "Connection")
        assert answer.json()["status"] == "Linked" and answer.json()["sourceType"] == "Expense"
    assert first.json()["id"] != second.json()["id"]
    assert len(partner_expense_connections(api, company_id)) == 2


def test_idempotency_key_replays_the_first_answer(api: httpx.Client) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.post("/companies", json={"name": "Once"}, headers=key)
    again = api.post("/companies", content=b'{ "name" : "Once" }', headers=key)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert len(state(api)["companies"]) == 1
    different = api.post("/companies", json={"name": "Twice"}, headers=key)
    assert different.status_code == 422
    conform(different.json(), "ErrorMessage")
    other_path = api.post(PARTNER_EXPENSE.format(first.json()["id"]), headers=key)
    assert other_path.status_code == 422
    replayed = [r["replayed"] for r in state(api)["requests"]]
    assert replayed == [False, True, False, False]


def test_idempotency_key_while_in_flight_is_409(sandbox: SandboxServer, api: httpx.Client) -> None:
    company_id = company(api)["id"]
    path = PARTNER_EXPENSE.format(company_id)
    faults(api, {"method": "POST", "path": PARTNER_EXPENSE.format("*"), "holdAfterCreate": HOLD})
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(api.post, path, headers=key)
        # Codat has created the connection and holds its answer: the first POST is in flight.
        wait_for(
            lambda: in_flight(api, "POST", path) and partner_expense_connections(api, company_id),
            timeout=10,
            interval=0.01,
            what="the first POST to be created and held",
        )
        second = api.post(path, headers=key)
        still_held = in_flight(api, "POST", path)
        assert second.status_code == 409, (second.status_code, second.text)
        # The second POST was answered while the first still had no answer.
        assert [r["idempotencyKey"] for r in still_held] == [key["Idempotency-Key"]]
        assert first.result().status_code == 200
    assert [r["status"] for r in requests_to(api, "POST", path)] == [200, 409]
    replay = api.post(path, headers=key)
    assert replay.json() == first.result().json()
    assert len(partner_expense_connections(api, company_id)) == 1


def test_429_is_not_cached_for_the_key(api: httpx.Client) -> None:
    faults(api, {"method": "POST", "path": "/companies", "status": 429, "retryAfter": "1"})
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert api.post("/companies", json={"name": "A"}, headers=key).status_code == 429
    assert api.post("/companies", json={"name": "A"}, headers=key).status_code == 200


def test_lost_answer_after_create_then_replay_with_the_key(api: httpx.Client) -> None:
    """The crash window: Codat created the connection, but the caller never saw the answer."""
    company_id = company(api)["id"]
    faults(api, {"path": PARTNER_EXPENSE.format("*"), "holdAfterCreate": 0.0, "status": 503})
    key = {"Idempotency-Key": str(uuid.uuid4())}
    lost = api.post(PARTNER_EXPENSE.format(company_id), headers=key)
    assert lost.status_code == 503
    (created,) = partner_expense_connections(api, company_id)
    replay = api.post(PARTNER_EXPENSE.format(company_id), headers=key)
    assert replay.status_code == 200 and replay.json()["id"] == created["id"]
    assert len(partner_expense_connections(api, company_id)) == 1


# --- Faults ---------------------------------------------------------------------------------


def test_503_three_times_then_success(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    faults(
        api,
        {
            "method": "POST",
            "path": "/companies/*/sync/expenses/connections/partnerExpense",
            "status": 503,
            "times": 3,
        },
    )
    statuses = [api.post(PARTNER_EXPENSE.format(company_id)).status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 200]
    failed = api.post(PARTNER_EXPENSE.format(company_id))
    assert failed.status_code == 200
    log = state(api)["requests"]
    assert [bool(r["fault"]) for r in log[-5:]] == [True, True, True, False, False]
    assert len(partner_expense_connections(api, company_id)) == 2


def test_faulted_answer_is_in_codat_shape_and_rules_match_method(api: httpx.Client) -> None:
    faults(api, {"method": "GET", "path": "/companies/*", "status": 500})
    assert api.post("/companies", json={"name": "A"}).status_code == 200
    answer = api.get(f"/companies/{uuid.uuid4()}")
    assert answer.status_code == 500
    conform(answer.json(), "ErrorMessage")
    assert answer.json()["statusCode"] == 500


def test_429_with_retry_after_seconds_or_http_date(api: httpx.Client) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    faults(
        api,
        {"path": "/companies", "status": 429, "retryAfter": "1"},
        {"path": "/companies", "status": 429, "retryAfter": when},
    )
    first = api.post("/companies", json={"name": "A"})
    second = api.post("/companies", json={"name": "A"})
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert (second.status_code, second.headers["Retry-After"]) == (429, when)
    assert "x-rate-limit-remaining" in first.headers
    assert api.post("/companies", json={"name": "A"}).status_code == 200


def test_delay_slows_the_answer(api: httpx.Client) -> None:
    faults(api, {"path": "/companies", "delay": 0.3})
    started = time.monotonic()
    assert api.post("/companies", json={"name": "A"}).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_drop_closes_the_connection_without_an_answer(api: httpx.Client) -> None:
    faults(api, {"path": "/companies", "drop": True})
    with pytest.raises(httpx.TransportError):
        api.post("/companies", json={"name": "A"})
    assert state(api)["requests"][-1]["status"] is None
    assert api.post("/companies", json={"name": "A"}).status_code == 200


def test_drop_after_create_keeps_what_was_created(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    faults(api, {"path": PARTNER_EXPENSE.format("*"), "holdAfterCreate": 0.05, "drop": True})
    with pytest.raises(httpx.TransportError):
        api.post(PARTNER_EXPENSE.format(company_id))
    assert len(partner_expense_connections(api, company_id)) == 1


def test_rule_for_a_time_window(api: httpx.Client) -> None:
    """A `forSeconds` rule faults every matching request until it expires, then none.

    Judged by when each request was sent and answered, not by a sleep: whatever was answered
    before the window could have closed is a 503, whatever was sent after it closed is a 200.
    """
    window = 1.0
    before = time.monotonic()
    faults(api, {"path": "/companies", "status": 503, "forSeconds": window})
    installed = time.monotonic()  # the rule's clock started between `before` and now
    seen: list[tuple[float, float, int]] = []
    deadline = installed + window + 15
    while len([s for _, _, s in seen if s == 200]) < 2:
        assert time.monotonic() < deadline, f"still faulted: {[s for _, _, s in seen][-5:]}"
        sent = time.monotonic()
        status = api.post("/companies", json={"name": "A"}).status_code
        seen.append((sent, time.monotonic(), status))
        time.sleep(0.05)
    statuses = [status for _, _, status in seen]
    assert statuses[0] == 503, seen
    assert statuses == sorted(statuses, reverse=True), f"503s, then 200s only: {seen}"
    assert set(statuses) == {503, 200}, seen
    for sent, answered, status in seen:
        if answered < before + window:
            assert status == 503, (sent - before, answered - before, seen)
        if sent > installed + window:
            assert status == 200, (sent - before, answered - before, seen)
    first_200 = next(answered for _, answered, status in seen if status == 200)
    assert first_200 - before >= window


def test_fault_rules_are_validated_and_cleared(api: httpx.Client) -> None:
    assert api.post("/_sandbox/faults", json={"path": "/x"}).status_code == 400
    assert api.post("/_sandbox/faults", json=[{"path": "/x", "sttaus": 1}]).status_code == 400
    assert "sttaus" in api.post("/_sandbox/faults", json=[{"path": "/x", "sttaus": 1}]).text
    faults(api, {"path": "/companies", "status": 503, "times": 5})
    assert len(state(api)["faults"]) == 1
    assert api.delete("/_sandbox/faults").status_code == 200
    assert api.post("/companies", json={"name": "A"}).status_code == 200


# --- Webhooks -------------------------------------------------------------------------------


def test_state_changes_send_signed_webhooks(api: httpx.Client, hooked: Receiver) -> None:
    created = company(api)
    company_id = created["id"]
    accounting = connection(api, company_id)
    conn_id = accounting["id"]
    admin(api, company_id, conn_id, "fail")
    admin(api, company_id, conn_id, "authorize")
    admin(api, company_id, conn_id, "deauthorize")
    admin(api, company_id, conn_id, "authorize")
    api.patch(f"/companies/{company_id}/connections/{conn_id}", json={"status": "Unlinked"})
    api.post(PARTNER_EXPENSE.format(company_id))
    api.delete(f"/_sandbox/companies/{company_id}/connections/{conn_id}")
    api.delete(f"/_sandbox/companies/{company_id}")
    deliveries = settled(api, 10)
    assert all(d["delivered"] and d["attempts"] == 1 and d["status"] == 204 for d in deliveries)
    assert hooked.rejected == 0
    for body in hooked.bodies:
        conform_webhook(body)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for body in hooked.bodies:
        by_type.setdefault(body["eventType"], []).append(body["payload"])
    assert sorted((t, len(b)) for t, b in by_type.items()) == [
        ("company.created", 1),
        ("company.deleted", 1),
        ("connection.connected", 1),
        ("connection.created", 2),
        ("connection.deleted", 1),
        ("connection.disconnected", 2),
        ("connection.failed", 1),
        ("connection.reconnected", 1),
    ]
    assert by_type["company.created"][0]["id"] == company_id
    failed = by_type["connection.failed"][0]["connection"]
    assert failed["status"] == "PendingAuth" and failed["dataConnectionErrors"]
    assert {p["connection"]["status"] for p in by_type["connection.disconnected"]} == {
        "Deauthorized",
        "Unlinked",
    }
    expense = [p["connection"] for p in by_type["connection.created"]]
    assert [(c["sourceType"], c["status"]) for c in expense] == [
        ("Accounting", "PendingAuth"),
        ("Expense", "Linked"),
    ]
    assert all(p["referenceCompany"]["id"] == company_id for p in by_type["connection.deleted"])


def test_failed_deliveries_are_retried_with_the_same_message_id(
    api: httpx.Client, hooked: Receiver
) -> None:
    hooked.fail_first = 2
    company(api)
    (delivery,) = settled(api, 1)
    assert (delivery["attempts"], delivery["status"], delivery["delivered"]) == (3, 204, True)
    assert len(delivery["errors"]) == 2 and "HTTP 500" in delivery["errors"][0]
    assert {a["webhook-id"] for a in hooked.attempts} == {delivery["messageId"]}
    assert len(hooked.bodies) == 1


def test_legacy_mode_sends_data_connection_status_changed(
    api: httpx.Client, hooked: Receiver
) -> None:
    company_id = company(api)["id"]
    assert api.post(f"/_sandbox/companies/{company_id}/legacy", json={"legacy": True}).json()[
        "legacy"
    ]
    conn_id = connection(api, company_id)["id"]
    admin(api, company_id, conn_id, "fail")  # no status change: the rules service is silent
    admin(api, company_id, conn_id, "authorize")
    settled(api, 3)
    legacy = [b for b in hooked.bodies if "RuleType" in b]
    # Deliveries run concurrently, so (as with Svix) their order is best effort only.
    assert {(b["Data"]["oldStatus"], b["Data"]["newStatus"]) for b in legacy} == {
        (None, "PendingAuth"),
        ("PendingAuth", "Linked"),
    }
    assert len(legacy) == 2
    assert all(b["CompanyId"] == company_id and b["DataConnectionId"] == conn_id for b in legacy)
    assert {b["Data"]["platformKey"] for b in legacy} == {"gbol"}


def test_admin_send_repeats_one_message(api: httpx.Client, hooked: Receiver) -> None:
    body = company_event("company.created", new_company("Replayed Ltd"))
    answer = api.post(
        "/_sandbox/webhooks/send",
        json={"body": body, "messageId": "msg_fixed", "repeat": 3, "concurrent": True},
    )
    assert answer.status_code == 200
    deliveries = answer.json()["deliveries"]
    assert [d["delivered"] for d in deliveries] == [True] * 3
    assert [a["webhook-id"] for a in hooked.attempts] == ["msg_fixed"] * 3
    assert hooked.bodies == [body] * 3


def test_admin_send_with_a_wrong_secret_is_rejected(api: httpx.Client, hooked: Receiver) -> None:
    answer = api.post("/_sandbox/webhooks/send", json={"raw": "{}", "secrets": [generate_secret()]})
    (delivery,) = answer.json()["deliveries"]
    assert delivery["delivered"] is False and delivery["status"] == 400
    assert hooked.rejected == 1 + len(FAST_RETRIES)


def test_admin_send_needs_a_configured_url(api: httpx.Client) -> None:
    answer = api.post("/_sandbox/webhooks/send", json={"body": {"eventType": "x"}})
    assert answer.status_code == 409


# --- The sender on its own ------------------------------------------------------------------


def test_sender_signs_with_every_secret_and_svix_prefix(receiver: Receiver) -> None:
    old, new = generate_secret(), SECRET

    async def send() -> Any:
        async with WebhookSender(receiver.url, [old, new], header_prefix="svix") as sender:
            return await sender.send(b'{"eventType":"company.created"}')

    delivery = asyncio.run(send())
    assert delivery.delivered and delivery.attempts == 1 and delivery.message_id.startswith("msg_")
    (headers,) = receiver.attempts
    assert len(headers["svix-signature"].split(" ")) == 2
    assert "webhook-id" not in headers


def test_sender_gives_up_after_its_retries() -> None:
    with LoopbackServer(Starlette()) as server:
        url = server.url  # nothing listens here once the server is stopped

    async def send() -> Any:
        async with WebhookSender(url, SECRET, retry_delays=(0, 0.01), timeout=1) as sender:
            return await sender.send(b"{}", message_id="msg_1")

    delivery = asyncio.run(send())
    assert (delivery.message_id, delivery.attempts, delivery.delivered) == ("msg_1", 3, False)
    assert delivery.status is None and len(delivery.errors) == 3


def test_senders_sharing_slots_keep_that_many_attempts_in_flight() -> None:
    """The stand-in's burst of webhooks waits its turn for a slot, in order, all delivered."""
    in_flight: list[int] = []
    now = [0]

    async def slow(request: Request) -> Response:
        now[0] += 1
        in_flight.append(now[0])
        await asyncio.sleep(0.02)
        now[0] -= 1
        return Response(status_code=204)

    with LoopbackServer(Starlette(routes=[Route("/hook", slow, methods=["POST"])])) as server:

        async def send_all() -> list[Any]:
            slots = asyncio.Semaphore(3)
            async with httpx.AsyncClient() as client:
                senders = [
                    WebhookSender(f"{server.url}/hook", SECRET, client=client, slots=slots)
                    for _ in range(12)
                ]
                return await asyncio.gather(*(sender.send(b"{}") for sender in senders))

        deliveries = asyncio.run(send_all())
    assert all(delivery.delivered for delivery in deliveries)
    assert len(in_flight) == 12 and max(in_flight) == 3, in_flight


def test_sign_headers_verify_with_svix() -> None:
    body = '{"name":"Café"}'.encode()
    headers = sign_headers([generate_secret(), SECRET], "msg_x", body)
    Webhook(SECRET).verify(body, headers)
    assert headers["webhook-id"] == "msg_x"
    stale = sign_headers(SECRET, "msg_x", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, stale)
    assert sign_headers(SECRET, "m", b"\xff", timestamp=1)["webhook-signature"].startswith("v1,")


def test_webhook_config_is_validated(api: httpx.Client) -> None:
    for config in (
        {"secrets": ["not base64 !"]},
        {"webhookUrl": "ftp://x"},
        {"retryDelays": "soon"},
        {"headerPrefix": ""},
    ):
        answer = api.post("/_sandbox/config", json=config)
        assert answer.status_code == 400, config
        assert "Invalid webhook config" in answer.json()["error"]
    api.post("/_sandbox/config", json={"webhookUrl": "http://127.0.0.1:9/hook"})
    answer = api.post("/_sandbox/webhooks/send", json={"raw": "{}"})
    assert answer.status_code == 409 and "secret" in answer.json()["error"]


# --- Sync for Expenses: Codat's read, the choices and the configuration ---------------------


def linked_company(api: httpx.Client) -> tuple[str, str]:
    """A company whose accounting connection the customer has linked: (company, connection)."""
    company_id = company(api)["id"]
    connection_id = connection(api, company_id)["id"]
    assert admin(api, company_id, connection_id, "authorize").status_code == 200
    return company_id, connection_id


def read_company(api: httpx.Client) -> str:
    company_id, connection_id = linked_company(api)
    answer = admin(api, company_id, connection_id, "read")
    assert answer.status_code == 200, answer.text
    return company_id


def expenses_config(api: httpx.Client, company_id: str) -> str:
    return f"/companies/{company_id}/sync/expenses/config"


def test_mapping_options_are_empty_until_codat_has_read_the_data(api: httpx.Client) -> None:
    company_id, connection_id = linked_company(api)
    path = f"/companies/{company_id}/sync/expenses/mappingOptions"
    before = api.get(path)
    assert before.status_code == 200, before.text
    conform(before.json(), "MappingOptions")
    assert (before.json()["accounts"], before.json()["taxRates"]) == ([], [])
    admin(api, company_id, connection_id, "read")
    after = api.get(path).json()
    conform(after, "MappingOptions")
    assert after["expenseProvider"] == "Partner Expense"
    banks = [a["name"] for a in after["accounts"] if a["isBankAccount"]]
    assert banks == ["Business Current Account", "Company Card"]
    assert after["trackingCategories"] and after["taxRates"]


@pytest.mark.parametrize(
    ("kind", "schema", "total"), [("suppliers", "Suppliers", 3), ("customers", "Customers", 2)]
)
def test_suppliers_and_customers_are_paginated_in_codat_shape(
    api: httpx.Client, kind: str, schema: str, total: int
) -> None:
    company_id = read_company(api)
    path = f"/companies/{company_id}/data/{kind}"
    size = total - 1  # two pages, the second with one item
    first = api.get(path, params={"page": 1, "pageSize": size}).json()
    conform(first, schema)
    assert (first["pageNumber"], first["pageSize"], first["totalResults"]) == (1, size, total)
    assert len(first["results"]) == size
    assert first["_links"]["next"]["href"] == f"{path}?page=2&pageSize={size}"
    last = api.get(path, params={"page": 2, "pageSize": size}).json()
    conform(last, schema)
    assert len(last["results"]) == 1 and "next" not in last["_links"]
    assert last["_links"]["previous"]["href"] == f"{path}?page=1&pageSize={size}"
    ids = [item["id"] for item in first["results"] + last["results"]]
    assert len(set(ids)) == total
    bad = api.get(path, params={"pageSize": 0})
    assert bad.status_code == 400
    conform(bad.json(), "ErrorMessage")


def test_each_company_has_choices_of_its_own(api: httpx.Client) -> None:
    one, two = read_company(api), read_company(api)
    suppliers = [api.get(f"/companies/{c}/data/suppliers").json()["results"] for c in (one, two)]
    assert {s["id"] for s in suppliers[0]}.isdisjoint({s["id"] for s in suppliers[1]})


def choose(api: httpx.Client, company_id: str) -> dict[str, Any]:
    """The first bank account, supplier and customer the company offers."""
    options = api.get(f"/companies/{company_id}/sync/expenses/mappingOptions").json()
    bank = next(a["id"] for a in options["accounts"] if a["isBankAccount"])
    supplier = api.get(f"/companies/{company_id}/data/suppliers").json()["results"][0]["id"]
    customer = api.get(f"/companies/{company_id}/data/customers").json()["results"][0]["id"]
    return {"bankAccount": {"id": bank}, "supplier": {"id": supplier}, "customer": {"id": customer}}


def test_configuration_is_unset_then_set_and_read_back(api: httpx.Client) -> None:
    company_id = read_company(api)
    unset = api.get(expenses_config(api, company_id))
    assert unset.status_code == 200, unset.text
    conform(unset.json(), "CompanyConfiguration")
    assert unset.json() == {"bankAccount": {}, "supplier": {}, "customer": {}}
    chosen = choose(api, company_id)
    answer = api.post(expenses_config(api, company_id), json=chosen)
    assert answer.status_code == 200, answer.text
    conform(answer.json(), "CompanyConfiguration")
    assert answer.json() == chosen
    assert api.get(expenses_config(api, company_id)).json() == chosen


@pytest.mark.parametrize("missing", ["bankAccount", "supplier", "customer"])
def test_configuration_without_all_three_is_refused_in_codat_shape(
    api: httpx.Client, missing: str
) -> None:
    company_id = read_company(api)
    chosen = choose(api, company_id)
    answer = api.post(expenses_config(api, company_id), json={**chosen, missing: {"name": "no id"}})
    assert answer.status_code == 400
    body = answer.json()
    conform(body, "ErrorMessage")
    assert missing in body["error"]
    assert [e["itemId"] for e in body["validation"]["errors"]] == [f"{missing}.id"]
    assert api.get(expenses_config(api, company_id)).json()[missing] == {}


def test_configuration_with_an_unknown_supplier_is_refused_with_the_valid_ones(
    api: httpx.Client,
) -> None:
    company_id = read_company(api)
    chosen = {**choose(api, company_id), "supplier": {"id": "no-such-supplier"}}
    answer = api.post(expenses_config(api, company_id), json=chosen)
    assert answer.status_code == 400
    conform(answer.json(), "ErrorMessage")
    suppliers = api.get(f"/companies/{company_id}/data/suppliers").json()["results"]
    assert "no-such-supplier" in answer.json()["error"]
    assert all(s["id"] in answer.json()["error"] for s in suppliers)


def test_configuration_post_honours_the_idempotency_key(api: httpx.Client) -> None:
    company_id = read_company(api)
    chosen = choose(api, company_id)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    path = expenses_config(api, company_id)
    first = api.post(path, json=chosen, headers=key)
    again = api.post(path, json=chosen, headers=key)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    assert [r["replayed"] for r in requests_to(api, "POST", path)] == [False, True]
    other = api.post(path, json={**chosen, "customer": chosen["supplier"]}, headers=key)
    assert other.status_code == 422
    conform(other.json(), "ErrorMessage")


def test_configuration_of_an_unknown_company_is_404(api: httpx.Client) -> None:
    answer = api.get(expenses_config(api, str(uuid.uuid4())))
    assert answer.status_code == 404
    conform(answer.json(), "ErrorMessage")


def test_a_pending_connection_cannot_be_read(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    connection_id = connection(api, company_id)["id"]
    answer = admin(api, company_id, connection_id, "read")
    assert answer.status_code == 409
    assert "PendingAuth" in answer.json()["error"]


def read_webhooks(receiver: Receiver) -> list[dict[str, Any]]:
    return [b for b in receiver.bodies if b["eventType"].startswith("read.completed")]


def test_codat_reads_the_data_a_moment_after_the_accounting_connection_is_linked(
    api: httpx.Client, hooked: Receiver
) -> None:
    assert api.post("/_sandbox/config", json={"dataReadDelay": 0.2}).json()["dataReadDelay"] == 0.2
    company_id, connection_id = linked_company(api)
    assert read_webhooks(hooked) == []  # not at once: a moment later
    [body] = wait_for(lambda: read_webhooks(hooked), what="read.completed.initial")
    conform_webhook(body)
    assert body["eventType"] == "read.completed.initial"
    assert body["payload"]["referenceCompany"]["id"] == company_id
    assert {s["connectionId"] for s in body["payload"]["dataTypes"]} == {connection_id}
    # A reconnection is no first read; the admin API reads again on demand.
    admin(api, company_id, connection_id, "deauthorize")
    admin(api, company_id, connection_id, "authorize")
    admin(api, company_id, connection_id, "read")
    bodies = wait_for(lambda: read_webhooks(hooked)[1:], what="read.completed")
    assert [b["eventType"] for b in bodies] == ["read.completed"]
    time.sleep(0.4)
    assert len(read_webhooks(hooked)) == 2


def test_without_a_read_delay_codat_reads_only_when_asked(
    api: httpx.Client, hooked: Receiver
) -> None:
    assert api.post("/_sandbox/config", json={}).json()["dataReadDelay"] is None
    linked_company(api)
    settled(api, 3)
    assert [e["eventType"] for e in state(api)["events"]][-1] == "connection.connected"
    assert not any(e["eventType"].startswith("read.") for e in state(api)["events"])


def test_a_negative_read_delay_is_refused(api: httpx.Client) -> None:
    answer = api.post("/_sandbox/config", json={"dataReadDelay": -1})
    assert answer.status_code == 400
    assert "dataReadDelay" in answer.json()["error"]

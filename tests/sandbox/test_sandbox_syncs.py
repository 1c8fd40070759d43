"""The stand-in's expense syncs and rate-limit notices over loopback HTTP, in Codat's shapes."""

# The fixtures come from test_sandbox.py: the tests' parameters name them.
# ruff: noqa: F811

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from tests.sandbox.codat_schemas import EXPENSES_DOC, conform_to
from tests.sandbox.test_sandbox import (
    AUTH,
    Receiver,
    api,  # noqa: F401  (fixtures)
    company,
    hooked,  # noqa: F401
    receiver,  # noqa: F401
    sandbox,  # noqa: F401
    settled,
)

SYNCS = "/companies/{}/sync/expenses/syncs"
FAILING = [
    {"id": "t-1", "status": "Completed"},
    {"id": "t-2", "status": "ValidationError", "message": "Supplier is archived in Xero"},
    {"id": "t-3", "status": "PushError", "message": "Tax rate not found"},
]


def conform(instance: Any, schema: str) -> None:
    conform_to(instance, f"/components/schemas/{schema}", EXPENSES_DOC)


def conform_page(page: dict[str, Any]) -> None:
    """A `Transactions` page. Codat's schema puts `additionalProperties: false` beside an
    `allOf`, which in JSON Schema refuses every property (none is declared beside it): the page
    is checked against the parts of the `allOf` instead, and for no property outside them."""
    conform_to(page, "/components/schemas/PagingInfo", EXPENSES_DOC)
    assert isinstance(page["results"], list)
    for item in page["results"]:
        conform(item, "Transaction")
    assert set(page) <= {"results", "pageNumber", "pageSize", "totalResults", "_links"}


def sync(api: httpx.Client, company_id: str, **data: Any) -> dict[str, Any]:
    answer = api.post(f"/_sandbox/companies/{company_id}/syncs", json=data)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_sync_status_endpoints_answer_in_codat_shape(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    base = SYNCS.format(company_id)
    for path in ("/latest/status", "/lastSuccessful/status"):
        none = api.get(base + path)
        assert none.status_code == 404, none.text
        conform(none.json(), "ErrorMessage")
    assert api.get(base + "/list/status").json() == []
    good = sync(
        api,
        company_id,
        transactions=[{"id": "t-0", "status": "Completed"}],
        syncUtc="2024-03-01T10:00:00Z",
    )["sync"]
    bad = sync(api, company_id, transactions=FAILING, syncUtc="2024-03-02T10:00:00Z")["sync"]
    latest = api.get(base + "/latest/status").json()
    conform(latest, "CompanySyncStatus")
    assert (latest["syncId"], latest["syncStatus"], latest["errorMessage"]) == (
        bad["syncId"],
        "Failed",
        "Supplier is archived in Xero",
    )
    last_good = api.get(base + "/lastSuccessful/status").json()
    conform(last_good, "CompanySyncStatus")
    assert (last_good["syncId"], last_good["syncStatusCode"]) == (good["syncId"], 2000)
    listed = api.get(base + "/list/status").json()
    for item in listed:
        conform(item, "CompanySyncStatus")
    assert [s["syncId"] for s in listed] == [bad["syncId"], good["syncId"]]
    one = api.get(f"{base}/{good['syncId']}/status")
    assert one.json() == good
    page = api.get(f"{base}/{bad['syncId']}/transactions", params={"pageSize": 2}).json()
    conform_page(page)
    for item in page["results"]:
        conform(item, "Transaction")
    assert [(t["transactionId"], t["status"]) for t in page["results"]] == [
        ("t-1", "Completed"),
        ("t-2", "ValidationError"),
    ]
    assert page["totalResults"] == 3 and "next" in page["_links"]


@pytest.mark.parametrize(
    "path",
    [
        "/companies/{unknown}/sync/expenses/syncs/latest/status",
        "/companies/{unknown}/sync/expenses/syncs/list/status",
        "/companies/{company}/sync/expenses/syncs/{unknown}/status",
        "/companies/{company}/sync/expenses/syncs/{unknown}/transactions",
    ],
)
def test_unknown_company_or_sync_is_404(api: httpx.Client, path: str) -> None:
    company_id = company(api)["id"]
    answer = api.get(path.format(company=company_id, unknown=uuid.uuid4()))
    assert answer.status_code == 404, answer.text
    conform(answer.json(), "ErrorMessage")


def test_sync_status_needs_the_api_key(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    wrong = {"Authorization": "Basic " + base64.b64encode(b"wrong").decode()}
    answer = api.get(SYNCS.format(company_id) + "/latest/status", headers=wrong)
    assert answer.status_code == 401
    conform(answer.json(), "ErrorMessage")
    assert AUTH["Authorization"] != wrong["Authorization"]


def test_bad_paging_of_transactions_is_400(api: httpx.Client) -> None:
    company_id = company(api)["id"]
    sync_id = sync(api, company_id, transactions=FAILING)["sync"]["syncId"]
    answer = api.get(f"{SYNCS.format(company_id)}/{sync_id}/transactions?page=0")
    assert answer.status_code == 400
    conform(answer.json(), "ErrorMessage")


def webhook_schema(event_type: str) -> str:
    return f"/webhooks/{event_type}/post/requestBody/content/application~1json/schema"


def test_syncs_send_current_legacy_or_no_webhooks(api: httpx.Client, hooked: Receiver) -> None:
    company_id = company(api)["id"]
    sync(api, company_id, transactions=[{"id": "t-0", "status": "Completed"}])
    failed = sync(api, company_id, transactions=FAILING)["sync"]["syncId"]
    bare = sync(api, company_id, transactions=FAILING, listTransactions=False)["sync"]["syncId"]
    sync(api, company_id, transactions=FAILING, webhook="legacy", failureStage="Mapping")
    sync(api, company_id, transactions=[], webhook="legacy")
    sync(api, company_id, transactions=FAILING, webhook="none")
    settled(api, 6)  # company.created and five sync webhooks: the sixth sync sent none
    bodies = [b for b in hooked.bodies if b.get("eventType") != "company.created"]
    assert len(bodies) == 5
    current = {b["payload"]["syncId"]: b for b in bodies if "eventType" in b}
    for body in current.values():
        conform_to(body, webhook_schema(body["eventType"]), EXPENSES_DOC)
    assert current[failed]["eventType"] == "expenses.sync.unsuccessful"
    assert [(t["id"], t["status"]) for t in current[failed]["payload"]["transactions"]] == [
        ("t-1", "Completed"),
        ("t-2", "Failed"),
        ("t-3", "PushError"),
    ]
    assert "transactions" not in current[bare]["payload"]
    legacy = sorted(
        (b["RuleType"], b["Data"].get("FailureStage")) for b in bodies if "RuleType" in b
    )
    assert legacy == [("Sync Completed", None), ("Sync Failed", "Mapping")]
    for body in bodies:
        if "RuleType" in body:
            name = (
                "SyncFailedWebhook" if body["RuleType"] == "Sync Failed" else "SyncCompleteWebhook"
            )
            conform(body, name)


def test_rate_limit_notices_in_codat_shape(api: httpx.Client, hooked: Receiver) -> None:
    reached = api.post("/_sandbox/rateLimit", json={"event": "reached"})
    assert reached.status_code == 200, reached.text
    api.post("/_sandbox/rateLimit", json={"event": "reset", "expiryDate": "2030-01-02T00:00:00Z"})
    settled(api, 2)
    by_type = {b["eventType"]: b for b in hooked.bodies}
    assert set(by_type) == {"client.rateLimit.reached", "client.rateLimit.reset"}
    for event_type, body in by_type.items():
        conform_to(body, webhook_schema(event_type), EXPENSES_DOC)
    assert by_type["client.rateLimit.reached"]["payload"]["quotaRemaining"] == 0
    assert by_type["client.rateLimit.reset"]["payload"]["expiryDate"] == "2030-01-02T00:00:00Z"


@pytest.mark.parametrize(
    "data",
    [
        {"transactions": [{"status": "Broken"}]},
        {"transactions": "all"},
        {"outcome": "maybe"},
        {"webhook": "carrier pigeon"},
    ],
)
def test_bad_scripted_syncs_are_400(api: httpx.Client, data: dict[str, Any]) -> None:
    company_id = company(api)["id"]
    answer = api.post(f"/_sandbox/companies/{company_id}/syncs", json=data)
    assert answer.status_code == 400, answer.text
    assert api.post("/_sandbox/rateLimit", json={"event": "soon"}).status_code == 400

"""The webhook body builders produce exactly the shapes Codat's published schemas describe."""

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from processor.codat.platforms import PLATFORMS, UnknownPlatform, resolve_platform
from processor.sandbox.webhook_bodies import (
    CONNECTION_EVENTS,
    EXPENSES_DATA_TYPES,
    READ_EVENTS,
    company_event,
    connection_error,
    connection_event,
    encode,
    legacy_status_changed,
    legacy_sync_event,
    new_company,
    new_connection,
    rate_limit_event,
    read_completed_event,
    sync_event,
)
from tests.sandbox.codat_schemas import EXPENSES_DOC, PLATFORM_DOC, conform_to


def conform(instance: Any, pointer: str, document: str = PLATFORM_DOC) -> None:
    """Fail with every schema error of `instance` against `document#pointer`."""
    conform_to(instance, pointer, document)


def webhook_schema(event_type: str) -> str:
    return f"/webhooks/{event_type}/post/requestBody/content/application~1json/schema"


@pytest.fixture
def company() -> dict[str, Any]:
    return new_company("Bank of Dave", description="ours-42", tags={"region": "uk"})


@pytest.fixture
def connection(company: dict[str, Any]) -> dict[str, Any]:
    return new_connection(company["id"], "gbol")


def test_new_company_and_connection_match_codat_schemas(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    conform(company, "/components/schemas/Company")
    conform(connection, "/components/schemas/Connection")
    conform({**company, "dataConnections": [connection]}, "/components/schemas/Company")
    assert connection["platformName"] == "Xero"
    assert connection["linkUrl"].endswith(
        f"/companies/{company['id']}/connections/{connection['id']}/start"
    )


def test_schema_check_catches_a_wrong_shape(connection: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="Unlinkd"):
        conform({**connection, "status": "Unlinkd"}, "/components/schemas/Connection")
    with pytest.raises(AssertionError, match="extra"):
        conform({**connection, "extra": 1}, "/components/schemas/Connection")


@pytest.mark.parametrize("event_type", ["company.created", "company.deleted"])
def test_company_events_match_codat_schema(event_type: str, company: dict[str, Any]) -> None:
    body = company_event(event_type, company, event_id="ba29118f-5406-4e59-b05c-ba307ca38d01")
    conform(body, webhook_schema(event_type))
    assert body["eventType"] == event_type
    assert body["generatedDate"].endswith("Z")
    assert body["payload"] == {
        key: company[key] for key in ("id", "name", "description", "redirect", "created", "tags")
    }


@pytest.mark.parametrize("event_type", CONNECTION_EVENTS)
def test_connection_events_match_codat_schema(
    event_type: str, company: dict[str, Any], connection: dict[str, Any]
) -> None:
    if event_type == "connection.failed":
        connection["dataConnectionErrors"].append(connection_error("The user cancelled."))
    body = connection_event(event_type, company, connection)
    conform(body, webhook_schema(event_type))
    uuid.UUID(body["id"])
    reference = body["payload"]["referenceCompany"]
    assert reference["id"] == company["id"]
    assert reference["links"]["portal"].endswith(f"/companies/{company['id']}/summary")
    assert body["payload"]["connection"] == connection


def test_partner_expense_connection_event_matches_schema(company: dict[str, Any]) -> None:
    connection = new_connection(
        company["id"],
        "expn",
        platform_name="Partner Expense",
        source_type="Expense",
        status="Linked",
    )
    body = connection_event("connection.created", company, connection)
    conform(body, webhook_schema("connection.created"))
    assert body["payload"]["connection"]["lastSync"] is not None


def test_connection_event_leaves_out_fields_codat_does_not_send(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    body = connection_event("connection.deleted", company, {**connection, "deleted": True})
    assert "deleted" not in body["payload"]["connection"]


def test_legacy_status_changed_shape(company: dict[str, Any], connection: dict[str, Any]) -> None:
    body = legacy_status_changed(company, connection, "PendingAuth", "Linked")
    assert set(body) == {
        "ClientId",
        "ClientName",
        "CompanyId",
        "DataConnectionId",
        "RuleId",
        "RuleType",
        "AlertId",
        "Message",
        "Data",
    }
    assert body["RuleType"] == "DataConnectionStatusChanged"
    assert body["CompanyId"] == company["id"]
    assert body["Data"] == {
        "dataConnectionId": connection["id"],
        "newStatus": "Linked",
        "oldStatus": "PendingAuth",
        "platformKey": "gbol",
    }
    uuid.UUID(body["AlertId"])
    status_schema = "/components/schemas/Connection/definitions/dataConnectionStatus"
    conform(body["Data"]["newStatus"], status_schema)
    conform(body["Data"]["oldStatus"], status_schema)


def test_legacy_created_has_no_old_status(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    body = legacy_status_changed(company, connection, None, "PendingAuth", alert_id="a-1")
    assert body["Data"]["oldStatus"] is None
    assert body["AlertId"] == "a-1"


@pytest.mark.parametrize(
    "build",
    [
        lambda c, n: company_event("company.updated", c),
        lambda c, n: connection_event("read.completed", c, n),
        lambda c, n: legacy_status_changed(c, n, "PendingAuth", "Connected"),
        lambda c, n: new_connection(c["id"], "gbol", status="Active"),
    ],
)
def test_builders_reject_values_codat_never_sends(
    build: Callable[[dict[str, Any], dict[str, Any]], object],
    company: dict[str, Any],
    connection: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        build(company, connection)


def test_encode_is_compact_utf8_json(company: dict[str, Any]) -> None:
    company["name"] = "Café Ltd"
    raw = encode(company_event("company.created", company))
    assert b": " not in raw and b", " not in raw
    assert "Café".encode() in raw
    assert json.loads(raw)["payload"]["name"] == "Café Ltd"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gbol", ("gbol", "Xero")),
        ("xero", ("gbol", "Xero")),
        (" QuickBooks online ", ("qhyg", "QuickBooks Online")),
        ("MQJO", ("mqjo", "Codat Sandbox")),
    ],
)
def test_resolve_platform_by_key_or_name(value: str, expected: tuple[str, str]) -> None:
    assert resolve_platform(value) == expected


def test_unknown_platform_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownPlatform) as raised:
        resolve_platform("sage50")
    assert isinstance(raised.value, ValueError)
    assert "'sage50'" in str(raised.value)
    assert all(key in str(raised.value) for key in PLATFORMS)
    with pytest.raises(UnknownPlatform):
        new_connection(str(uuid.uuid4()), "zzzz")


@pytest.mark.parametrize("event_type", READ_EVENTS)
def test_read_completed_events_match_codat_schema(
    event_type: str, company: dict[str, Any], connection: dict[str, Any]
) -> None:
    body = read_completed_event(event_type, company, connection["id"])
    conform(body, webhook_schema(event_type))
    assert body["eventType"] == event_type
    assert body["payload"]["referenceCompany"]["id"] == company["id"]
    summaries = body["payload"]["dataTypes"]
    assert {s["connectionId"] for s in summaries} == {connection["id"]}
    assert [s["dataType"] for s in summaries] == list(EXPENSES_DATA_TYPES)
    assert {s["status"] for s in summaries} == {"Complete"}


def test_read_completed_with_a_data_type_codat_does_not_know_fails_its_schema(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    body = read_completed_event("read.completed", company, connection["id"])
    body["payload"]["dataTypes"][0]["dataType"] = "expenses"
    with pytest.raises(AssertionError, match="expenses"):
        conform(body, webhook_schema("read.completed"))


@pytest.mark.parametrize("event_type", ["expenses.sync.successful", "expenses.sync.unsuccessful"])
def test_sync_events_match_codat_schema(event_type: str, company: dict[str, Any]) -> None:
    failing = [{"id": "t-1", "status": "Failed", "errorMessage": "Supplier is archived"}]
    for transactions in (failing, None):
        body = sync_event(event_type, company, str(uuid.uuid4()), transactions)
        conform(body, webhook_schema(event_type), EXPENSES_DOC)


def test_sync_event_with_a_status_codat_does_not_know_is_refused(company: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="transaction status 'Broken' is not one of"):
        sync_event("expenses.sync.unsuccessful", company, "s", [{"id": "t", "status": "Broken"}])


@pytest.mark.parametrize("stage", [None, "Pushing"])
def test_legacy_sync_bodies_match_codat_schema(stage: str | None, company: dict[str, Any]) -> None:
    body = legacy_sync_event(company, str(uuid.uuid4()), failure_stage=stage)
    name = "SyncFailedWebhook" if stage else "SyncCompleteWebhook"
    conform(body, f"/components/schemas/{name}", EXPENSES_DOC)
    assert body["RuleType"] == ("Sync Failed" if stage else "Sync Completed")


@pytest.mark.parametrize("event_type", ["client.rateLimit.reached", "client.rateLimit.reset"])
def test_rate_limit_events_match_codat_schema(event_type: str) -> None:
    body = rate_limit_event(
        event_type, daily_quota=2000, quota_remaining=0, expiry_date="2024-09-02T00:00:00Z"
    )
    conform(body, webhook_schema(event_type), EXPENSES_DOC)

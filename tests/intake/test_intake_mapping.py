"""From webhook bodies (current envelope and legacy) to stored events: `processor.intake.bodies`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from handlers.transitions import IGNORED
from processor import clock
from processor.intake.bodies import (
    CURRENT,
    LEGACY,
    MAX_JSON_DEPTH,
    UNKNOWN,
    BodyError,
    parse_body,
    webhook_event,
)
from processor.sandbox.webhook_bodies import (
    EXPENSES_DATA_TYPES,
    company_event,
    connection_error,
    connection_event,
    encode,
    legacy_status_changed,
    legacy_sync_event,
    new_company,
    new_connection,
    read_completed_event,
    sync_event,
)
from processor.work.folding import FoldReport, fold_companies, fold_pending
from store import NewEvent, Store, StoredEvent
from tests.support import open_db

TIMESTAMP = 1_709_287_200  # 2024-03-01T10:00:00Z
TIMESTAMP_DATE = "2024-03-01T10:00:00.0000000Z"
DAY = "2024-03-01"
RECEIVED_AT = "2024-03-01T10:00:00.5000000Z"
FOLDED_AT = "2024-03-01T10:00:01.0000000Z"  # the worker's clock when it folds
MESSAGE_ID = "msg_2d3JpbQ0AgzyCaJdYbKFWuTUDhV"
HEADERS = {"webhook-id": MESSAGE_ID, "webhook-timestamp": str(TIMESTAMP)}


def intake(data: dict[str, Any], *, timestamp: int = TIMESTAMP) -> NewEvent:
    body = encode(data)
    return webhook_event(
        parse_body(body),
        body=body,
        message_id=MESSAGE_ID,
        timestamp=timestamp,
        headers=HEADERS,
        received_at=RECEIVED_AT,
    )


@pytest.fixture
def company() -> dict[str, Any]:
    return new_company("Sawayn Group")


@pytest.fixture
def connection(company: dict[str, Any]) -> dict[str, Any]:
    return new_connection(company["id"], "gbol")


# -- current envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["company.created", "company.deleted"])
def test_company_event_fields(company: dict[str, Any], event_type: str) -> None:
    data = company_event(event_type, company, generated_date="2023-09-06T09:13:35.8188152Z")
    event = intake(data)
    assert event.body_format == CURRENT
    assert event.event_type == event_type
    assert event.event_id == data["id"]
    assert event.message_id == MESSAGE_ID
    assert event.company_id == company["id"]
    assert event.connection_id is None
    assert event.generated_date == "2023-09-06T09:13:35.8188152Z"
    assert event.received_at == RECEIVED_AT
    assert event.source == "webhook"
    assert event.headers == HEADERS
    assert event.body == encode(data)
    assert event.outcome is None
    assert event.fields == {"company_id": company["id"], "company_name": "Sawayn Group"}


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("connection.created", "PendingAuth"),
        ("connection.connected", "Linked"),
        ("connection.disconnected", "Unlinked"),
        ("connection.disconnected", "Deauthorized"),
        ("connection.reconnected", "Linked"),
        ("connection.deleted", "Linked"),
    ],
)
def test_connection_event_fields(company: dict[str, Any], event_type: str, status: str) -> None:
    connection = new_connection(company["id"], "qhyg", status=status)
    data = connection_event(event_type, company, connection, generated_date="2024-01-02T03:04:05Z")
    event = intake(data)
    assert event.body_format == CURRENT
    assert event.event_type == event_type
    assert event.event_id == data["id"]
    assert event.company_id == company["id"]
    assert event.connection_id == connection["id"]
    assert event.generated_date == "2024-01-02T03:04:05.0000000Z"
    assert event.outcome is None
    assert event.fields == {
        "company_id": company["id"],
        "company_name": "Sawayn Group",
        "connection": {
            "id": connection["id"],
            "status": status,
            "platform_key": "qhyg",
            "platform_name": "QuickBooks Online",
            "source_type": "Accounting",
        },
        "error": None,
    }


def test_expense_connection_keeps_its_source_type(company: dict[str, Any]) -> None:
    partner = new_connection(
        company["id"],
        "xpns",
        platform_name="Partner Expense",
        source_type="Expense",
        status="Linked",
    )
    event = intake(connection_event("connection.created", company, partner))
    assert event.fields["connection"]["source_type"] == "Expense"
    assert event.fields["connection"]["platform_key"] == "xpns"
    assert event.connection_id == partner["id"]


def test_connection_failed_carries_the_last_error(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    connection["dataConnectionErrors"] = [
        connection_error("an older failure", status_code="500", status_text="Server Error"),
        connection_error("The user cancelled the link flow"),
    ]
    event = intake(connection_event("connection.failed", company, connection))
    assert event.event_type == "connection.failed"
    assert event.fields["error"] == "400 Bad Request The user cancelled the link flow"
    assert event.fields["connection"]["status"] == "PendingAuth"


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("2023-09-06T09:13:35.8188152Z", "2023-09-06T09:13:35.8188152Z"),
        ("2023-09-06T09:13:35.818Z", "2023-09-06T09:13:35.8180000Z"),
        ("2023-09-06T09:13:35Z", "2023-09-06T09:13:35.0000000Z"),
        ("2023-09-06T09:13:35.818815234Z", "2023-09-06T09:13:35.8188152Z"),
        ("2023-09-06T09:13:35.5+02:00", "2023-09-06T07:13:35.5000000Z"),
        ("2023-09-06T09:13:35-05:30", "2023-09-06T14:43:35.0000000Z"),
        ("2023-09-06T23:30:00.1234567-01:00", "2023-09-07T00:30:00.1234567Z"),
        ("2023-09-06T09:13:35+00:00", "2023-09-06T09:13:35.0000000Z"),
        ("2023-09-06T09:13:35", "2023-09-06T09:13:35.0000000Z"),
        ("2023-09-06T09:13:35.8188152", "2023-09-06T09:13:35.8188152Z"),
    ],
)
def test_generated_date_is_normalised_to_utc_with_seven_digits(
    company: dict[str, Any], connection: dict[str, Any], generated: str, expected: str
) -> None:
    data = connection_event("connection.connected", company, connection, generated_date=generated)
    assert intake(data).generated_date == expected
    company_data = company_event("company.created", company, generated_date=generated)
    assert intake(company_data).generated_date == expected


def test_normalised_dates_sort_as_text_in_time_order(company: dict[str, Any]) -> None:
    dates = [
        "2023-09-06T09:13:35.8188152Z",
        "2023-09-06T11:13:35.9+02:00",  # 09:13:35.9 UTC
        "2023-09-06T09:13:36",
        "2023-09-06T09:13:36.0000001Z",
    ]
    normalised = [
        intake(company_event("company.created", company, generated_date=d)).generated_date
        for d in dates
    ]
    assert normalised == sorted(normalised)
    assert len(set(normalised)) == len(normalised)


@pytest.mark.parametrize(
    "generated",
    [
        None,
        "",
        "yesterday",
        "2023-13-45T99:00:00Z",
        "2023-02-30T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:59:59-01:00",
        1693991615,
    ],
)
def test_missing_or_invalid_generated_date_falls_back_to_the_webhook_timestamp(
    company: dict[str, Any], generated: Any
) -> None:
    data = company_event("company.created", company)
    data["generatedDate"] = generated
    event = intake(data)
    assert event.generated_date == TIMESTAMP_DATE
    assert event.company_id == company["id"]


# -- legacy bodies -------------------------------------------------------------------------------

LEGACY_MAPPING = [
    (None, "PendingAuth", "connection.created"),
    ("PendingAuth", "Linked", "connection.connected"),
    ("Linked", "Unlinked", "connection.disconnected"),
    ("Linked", "Deauthorized", "connection.disconnected"),
    ("Unlinked", "Linked", "connection.reconnected"),
    ("Deauthorized", "Linked", "connection.reconnected"),
]


@pytest.mark.parametrize(("old", "new", "event_type"), LEGACY_MAPPING)
def test_legacy_status_changed_maps_to_current_types(
    company: dict[str, Any],
    connection: dict[str, Any],
    old: str | None,
    new: str,
    event_type: str,
) -> None:
    data = legacy_status_changed(company, connection, old, new)
    event = intake(data)
    assert event.body_format == LEGACY
    assert event.event_type == event_type
    assert event.event_id == data["AlertId"]
    assert event.company_id == company["id"]
    assert event.connection_id == connection["id"]
    assert event.outcome is None
    assert event.fields["company_id"] == company["id"]
    assert event.fields["connection"] == {
        "id": connection["id"],
        "status": new,
        "platform_key": "gbol",
        "platform_name": None,
        "source_type": None,
    }


def test_legacy_uses_the_webhook_timestamp_as_generated_date(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    data = legacy_status_changed(company, connection, "PendingAuth", "Linked")
    assert intake(data).generated_date == TIMESTAMP_DATE
    later = intake(data, timestamp=TIMESTAMP + 61)
    assert later.generated_date == "2024-03-01T10:01:01.0000000Z"
    assert later.generated_date == clock.from_timestamp(TIMESTAMP + 61)


def test_legacy_old_status_spelled_none_is_a_creation(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    for old in ("None", ""):
        data = legacy_status_changed(company, connection, None, "PendingAuth")
        data["Data"]["oldStatus"] = old
        assert intake(data).event_type == "connection.created"


def test_legacy_connection_id_falls_back_to_the_top_level(
    company: dict[str, Any], connection: dict[str, Any]
) -> None:
    data = legacy_status_changed(company, connection, "PendingAuth", "Linked")
    del data["Data"]["dataConnectionId"]
    event = intake(data)
    assert event.connection_id == connection["id"]
    assert event.fields["connection"]["id"] == connection["id"]


@pytest.mark.parametrize(("old", "new"), [("PendingAuth", "PendingAuth"), ("Linked", "Linked")])
def test_legacy_transition_without_a_current_type_is_stored_and_folds_as_ignored(
    tmp_path: Path, company: dict[str, Any], connection: dict[str, Any], old: str, new: str
) -> None:
    event = intake(legacy_status_changed(company, connection, old, new))
    assert event.event_type == f"legacy.DataConnectionStatusChanged.{old}->{new}"
    assert_folds_as_ignored(tmp_path, event)


# -- unknown types, and events for no company ----------------------------------------------------


def fold_like_the_worker(store: Store) -> list[FoldReport]:
    """One wake of the worker: every company with pending events, folded in one transaction."""
    with store.transaction():
        return fold_companies(store, store.pending_company_ids(), FOLDED_AT)


def assert_folds_as_ignored(tmp_path: Path, event: NewEvent) -> StoredEvent:
    """The event is stored, and the worker's fold records "ignored" without changing any state.

    A company-less event is stored beside a `company.created` of another company, so the fold
    really runs over it: the neighbour is folded, the company-less event is left as intake
    recorded it (ignored, processed when received) and no company appears for it.
    """
    neighbour = new_company("Neighbour Ltd")
    store = open_db(tmp_path / "intake.db")
    try:
        with store.transaction():
            [result] = store.append_events([event])
            if event.company_id is None:
                other = intake(company_event("company.created", neighbour))
                store.append_events([replace(other, message_id=f"{MESSAGE_ID}-neighbour")])
        reports = fold_like_the_worker(store)
        stored = store.event(result.seq)
        assert stored is not None
        assert stored.outcome == IGNORED
        assert stored.generated_date == event.generated_date
        assert store.count_events(pending=True) == 0
        assert fold_like_the_worker(store) == []  # nothing left for a second wake
        if event.company_id is None:
            assert stored.company_id is None
            assert stored.processed_at == RECEIVED_AT  # ignored at intake, never folded
            [report] = reports
            assert (report.company_id, report.after, report.outcomes) == (
                neighbour["id"],
                "created",
                {"applied": 1},
            )
            assert store.company_ids() == [neighbour["id"]]
            assert store.state_counts() == {"created": 1}
        else:
            assert stored.processed_at == FOLDED_AT
            [report] = reports
            assert (report.company_id, report.before, report.after) == (
                event.company_id,
                None,
                "created",
            )
            assert report.outcomes == {IGNORED: 1}
            assert report.commands == []
            row = store.company(event.company_id)
            assert row is not None
            assert row.state == "created"
            assert row.data["accounting_connection"] is None
            assert store.open_effects(event.company_id) == []
        return stored
    finally:
        store.close()


def test_unknown_current_type_for_a_company_is_stored_and_folds_as_ignored(
    tmp_path: Path, company: dict[str, Any]
) -> None:
    data = {
        "id": "743ec94a-8aa4-44bb-8bd4-e1855ee0e74b",
        "eventType": "bills.write.successful",
        "generatedDate": "2022-10-23T00:00:00.000Z",
        "payload": {"referenceCompany": {"id": company["id"], "name": company["name"]}},
    }
    event = intake(data)
    assert event.event_type == "bills.write.successful"
    assert event.company_id == company["id"]
    assert event.event_id == data["id"]
    assert_folds_as_ignored(tmp_path, event)


def test_unknown_company_type_is_stored_and_folds_as_ignored(
    tmp_path: Path, company: dict[str, Any]
) -> None:
    data = company_event("company.created", company)
    data["eventType"] = "company.product.added"
    event = intake(data)
    assert event.company_id == company["id"]
    assert_folds_as_ignored(tmp_path, event)


def test_current_event_without_a_company_is_ignored_at_intake(tmp_path: Path) -> None:
    data = {
        "id": "743ec94a-8aa4-44bb-8bd4-e1855ee0e74b",
        "eventType": "client.rateLimit.reached",
        "generatedDate": "2024-09-01T00:00:00Z",
        "payload": {"dailyQuota": 12000, "quotaRemaining": 0},
    }
    event = intake(data)
    assert event.company_id is None
    assert event.outcome == IGNORED
    assert event.event_type == "client.rateLimit.reached"
    assert event.generated_date == "2024-09-01T00:00:00.0000000Z"
    stored = assert_folds_as_ignored(tmp_path, event)
    assert stored.generated_date == "2024-09-01T00:00:00.0000000Z"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"hello": "world"},
        {"eventType": 42, "id": "x"},
        {"eventType": "connection.connected", "payload": "not an object"},
        {"eventType": "connection.connected", "payload": {"referenceCompany": "nope"}},
        {"RuleType": "NewCompanySynchronised", "AlertId": "a-1"},
        {"RuleType": "DataConnectionStatusChanged", "Data": "not an object"},
    ],
    ids=[
        "empty",
        "no-type",
        "non-string-type",
        "payload-string",
        "reference-string",
        "legacy-other-rule",
        "legacy-no-company",
    ],
)
def test_events_for_no_company_are_stored_as_ignored(tmp_path: Path, data: dict[str, Any]) -> None:
    event = intake(data)
    assert event.company_id is None
    assert event.outcome == IGNORED
    # No usable generatedDate in any of these bodies: the webhook timestamp stands in.
    assert event.generated_date == TIMESTAMP_DATE
    stored = assert_folds_as_ignored(tmp_path, event)
    assert stored.generated_date == TIMESTAMP_DATE


def test_unknown_body_with_a_company_is_stored_for_folding(tmp_path: Path) -> None:
    event = intake({"RuleType": "NewCompanySynchronised", "CompanyId": "c-1", "AlertId": "a-1"})
    assert event.body_format == LEGACY
    assert event.event_type == "legacy.NewCompanySynchronised"
    assert event.event_id == "a-1"
    assert event.generated_date == TIMESTAMP_DATE
    assert event.company_id == "c-1"
    assert_folds_as_ignored(tmp_path, event)
    shapeless = intake({"companyId": "c-2", "something": True})
    assert shapeless.body_format == UNKNOWN
    assert shapeless.event_type == "unknown"
    assert shapeless.company_id == "c-2"


def test_very_long_event_type_is_truncated() -> None:
    event = intake({"eventType": "x" * 5000, "payload": {}})
    assert event.event_type == "x" * 200
    assert event.outcome == IGNORED


# -- parse_body -----------------------------------------------------------------------------------


def test_parse_body_returns_the_object(company: dict[str, Any]) -> None:
    data = company_event("company.created", company)
    assert parse_body(encode(data)) == data
    assert parse_body(b"  {}\n") == {}


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[]", "array"),
        (b'[{"eventType": "company.created"}]', "array"),
        (b'"company.created"', "string"),
        (b"42", "number"),
        (b"-1.5e3", "number"),
        (b"true", "boolean"),
        (b"null", "null"),
    ],
)
def test_parse_body_rejects_json_that_is_not_an_object(body: bytes, kind: str) -> None:
    with pytest.raises(BodyError) as raised:
        parse_body(body)
    assert str(raised.value) == f"expected a JSON object, found a JSON {kind}"


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{'a': 1}", b'{"a": }', b"not json", b"\xff\xfe{}", b'{"a": 1} trailing'],
)
def test_parse_body_rejects_invalid_json(body: bytes) -> None:
    with pytest.raises(BodyError) as raised:
        parse_body(body)
    assert str(raised.value).startswith("expected a JSON object, found invalid JSON")
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_parse_body_rejects_ten_thousand_levels_of_nesting(opening: bytes) -> None:
    closing = b"]" if opening == b"[" else b"}"
    body = b'{"a":' + opening * 10_000 + b"1" + closing * 10_000 + b"}"
    with pytest.raises(BodyError) as raised:
        parse_body(body)
    message = str(raised.value)
    assert message == f"expected a JSON object nested at most {MAX_JSON_DEPTH} levels deep"


def test_parse_body_rejects_deep_unbalanced_nesting() -> None:
    with pytest.raises(BodyError, match="nested at most"):
        parse_body(b"[" * 10_000)


def test_parse_body_accepts_nesting_up_to_the_limit() -> None:
    depth = MAX_JSON_DEPTH - 1
    body = b'{"a":' * depth + b"{}" + b"}" * depth
    data = parse_body(body)
    for _ in range(depth):
        data = data["a"]
    assert data == {}
    with pytest.raises(BodyError, match="nested at most"):
        parse_body(b'{"a":' * MAX_JSON_DEPTH + b"{}" + b"}" * MAX_JSON_DEPTH)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[{" * 10_000 + '\\"' + "[" * 100
    body = json.dumps({"message": text}).encode()
    assert parse_body(body) == {"message": text}


@pytest.mark.parametrize(
    "event_type", ["connection.created", "connection.connected", "connection.reconnected"]
)
def test_connection_event_without_a_connection_id_changes_nothing(
    tmp_path: Path, company: dict[str, Any], connection: dict[str, Any], event_type: str
) -> None:
    # A signed body whose connection has no id is stored, but it names no connection: it must
    # not become the accounting connection, nor call for a partner expense connection.
    del connection["id"]
    event = intake(connection_event(event_type, company, {**connection, "status": "Linked"}))
    assert event.company_id == company["id"]
    assert event.connection_id is None
    store = open_db(tmp_path / "intake.db")
    try:
        with store.transaction():
            [result] = store.append_events([event])
            fold_pending(store, company["id"], RECEIVED_AT)
        row = store.company(company["id"])
        assert row is not None
        assert row.data["accounting_connection"] is None
        assert row.state == "created"
        assert store.open_effects(company["id"]) == []
        stored = store.event(result.seq)
        assert stored is not None
        assert stored.outcome == IGNORED
    finally:
        store.close()


def test_legacy_body_without_a_connection_id_changes_nothing(
    tmp_path: Path, company: dict[str, Any], connection: dict[str, Any]
) -> None:
    data = legacy_status_changed(company, connection, "PendingAuth", "Linked")
    del data["Data"]["dataConnectionId"]
    del data["DataConnectionId"]
    event = intake(data)
    assert event.company_id == company["id"]
    assert event.connection_id is None
    assert_folds_as_ignored(tmp_path, event)
    store = open_db(tmp_path / "intake.db")
    try:
        assert store.open_effects(company["id"]) == []
    finally:
        store.close()


# -- Codat's data reads ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["read.completed.initial", "read.completed"])
def test_read_completed_names_the_connections_it_read(
    company: dict[str, Any], connection: dict[str, Any], event_type: str
) -> None:
    data = read_completed_event(
        event_type, company, connection["id"], generated_date="2024-03-01T10:05:00.000Z"
    )
    event = intake(data)
    assert event.body_format == CURRENT
    assert (event.event_type, event.event_id) == (event_type, data["id"])
    assert event.company_id == company["id"]
    assert event.connection_id == connection["id"]
    assert event.generated_date == "2024-03-01T10:05:00.0000000Z"
    assert event.outcome is None  # folded by the worker
    assert event.fields["company_name"] == "Sawayn Group"
    assert event.fields["connection"] == {"id": connection["id"]}
    assert event.fields["connection_ids"] == [connection["id"]]
    assert event.fields["data_types"] == [
        {"connectionId": connection["id"], "dataType": data_type, "status": "Complete"}
        for data_type in EXPENSES_DATA_TYPES
    ]


def test_read_of_several_connections_lists_each_once_and_only_the_complete_ones(
    company: dict[str, Any],
) -> None:
    data = read_completed_event("read.completed", company, "acc-1", data_types=("suppliers",))
    summary = data["payload"]["dataTypes"][0]
    data["payload"]["dataTypes"] = [
        {
            **summary,
            "connectionId": "bank-1",
            "dataType": "banking-accounts",
            "status": "Queued",
        },
        {**summary, "connectionId": "acc-1", "dataType": "suppliers"},
        {**summary, "connectionId": "acc-2", "dataType": "customers"},
        {**summary, "connectionId": "acc-1", "dataType": "customers"},
    ]
    event = intake(data)
    assert event.fields["connection_ids"] == ["acc-1", "acc-2"]
    assert event.connection_id == "acc-1"
    assert [item["status"] for item in event.fields["data_types"]] == [
        "Queued",
        "Complete",
        "Complete",
        "Complete",
    ]


@pytest.mark.parametrize(
    "data_types",
    [None, "not a list", [], ["not an object"], [{"dataType": "suppliers", "status": "Complete"}]],
    ids=["missing", "string", "empty", "item-string", "no-connection-id"],
)
def test_read_naming_no_complete_connection_is_stored_and_folds_as_ignored(
    tmp_path: Path, company: dict[str, Any], data_types: Any
) -> None:
    data = read_completed_event("read.completed.initial", company, "acc-1")
    data["payload"]["dataTypes"] = data_types
    event = intake(data)
    assert event.fields["connection_ids"] == []
    assert "connection" not in event.fields
    assert_folds_as_ignored(tmp_path, event)


def test_read_of_a_failed_fetch_is_stored_and_folds_as_ignored(
    tmp_path: Path, company: dict[str, Any]
) -> None:
    data = read_completed_event("read.completed.initial", company, "acc-1")
    for summary in data["payload"]["dataTypes"]:
        summary["status"] = "FetchError"
    event = intake(data)
    assert event.fields["connection_ids"] == []
    assert_folds_as_ignored(tmp_path, event)


def test_a_huge_read_keeps_a_bounded_summary(company: dict[str, Any]) -> None:
    data = read_completed_event("read.completed", company, "acc-0", data_types=("suppliers",))
    summary = data["payload"]["dataTypes"][0]
    data["payload"]["dataTypes"] = [{**summary, "connectionId": f"acc-{n}"} for n in range(5000)]
    event = intake(data)
    assert len(event.fields["data_types"]) == 100
    assert event.fields["connection_ids"] == [f"acc-{n}" for n in range(10)]


def test_read_completed_initial_folds_a_ready_company_to_awaiting_configuration(
    tmp_path: Path, company: dict[str, Any], connection: dict[str, Any]
) -> None:
    """The webhook as Codat sends it, through intake, the store and the worker's fold."""
    linked = {**connection, "status": "Linked"}
    expense = new_connection(
        company["id"],
        "expn",
        platform_name="Partner Expense",
        source_type="Expense",
        status="Linked",
    )
    bodies = [
        connection_event("connection.created", company, connection),
        connection_event("connection.connected", company, linked),
        connection_event("connection.created", company, expense),
        read_completed_event("read.completed.initial", company, connection["id"]),
    ]
    events = [
        replace(
            intake(body), message_id=f"msg-{n}", generated_date=f"2024-03-01T10:0{n}:00.0000000Z"
        )
        for n, body in enumerate(bodies)
    ]
    store = open_db(tmp_path / "intake.db")
    try:
        with store.transaction():
            store.append_events(events[:3])
        fold_like_the_worker(store)
        row = store.company(company["id"])
        assert row is not None and row.state == "ready"
        with store.transaction():
            store.append_events(events[3:])
        [report] = fold_like_the_worker(store)
        assert (report.before, report.after, report.outcomes) == (
            "ready",
            "awaiting_configuration",
            {"applied": 1},
        )
        row = store.company(company["id"])
        assert row is not None
        assert row.data["data_reads"] == {connection["id"]: f"{DAY}T10:03:00.0000000Z"}
    finally:
        store.close()


# -- expense syncs ---------------------------------------------------------------------------------

FAILING: list[dict[str, Any]] = [
    {"id": "t-1", "status": "Completed", "errorMessage": None},
    {"id": "t-2", "status": "Failed", "errorMessage": "Supplier is archived in Xero"},
]


@pytest.mark.parametrize(
    ("event_type", "outcome"),
    [("expenses.sync.successful", "successful"), ("expenses.sync.unsuccessful", "failed")],
)
def test_sync_webhook_carries_its_sync_and_transactions(
    company: dict[str, Any], event_type: str, outcome: str
) -> None:
    body = sync_event(event_type, company, "sync-1", FAILING)
    event = intake(body)
    assert (event.event_type, event.company_id, event.event_id) == (
        event_type,
        company["id"],
        body["id"],
    )
    assert event.fields["sync"] == {
        "syncId": "sync-1",
        "outcome": outcome,
        "transactions": FAILING,
        "transactionCount": 2,
    }


def test_sync_webhook_without_transactions_says_they_are_unknown(
    company: dict[str, Any],
) -> None:
    event = intake(sync_event("expenses.sync.unsuccessful", company, "sync-1", None))
    assert event.fields["sync"]["transactions"] is None


@pytest.mark.parametrize(
    ("stage", "event_type", "outcome"),
    [
        (None, "expenses.sync.successful", "successful"),
        ("Pushing", "expenses.sync.unsuccessful", "failed"),
    ],
)
def test_legacy_sync_bodies_map_to_the_current_types(
    company: dict[str, Any], stage: str | None, event_type: str, outcome: str
) -> None:
    body = legacy_sync_event(company, "sync-1", failure_stage=stage)
    event = intake(body)
    assert (event.body_format, event.event_type, event.event_id) == (
        LEGACY,
        event_type,
        body["AlertId"],
    )
    assert event.generated_date == TIMESTAMP_DATE
    assert event.fields["sync"] == {
        "syncId": "sync-1",
        "outcome": outcome,
        "transactions": None,
        "failureStage": stage,
    }


@pytest.mark.parametrize(
    ("rule", "stage", "event_type"),
    [
        ("SyncCompleted", None, "expenses.sync.successful"),
        ("SyncFailed", "Pushing", "expenses.sync.unsuccessful"),
    ],
)
def test_legacy_sync_rules_under_their_ids_map_as_under_their_names(
    company: dict[str, Any], rule: str, stage: str | None, event_type: str
) -> None:
    """CODAT.md: Codat's Expenses guide still names the legacy rules by their ids."""
    body = {**legacy_sync_event(company, "sync-1", failure_stage=stage), "RuleType": rule}
    event = intake(body)
    assert (event.body_format, event.event_type) == (LEGACY, event_type)
    assert event.fields["sync"]["syncId"] == "sync-1"
    assert event.fields["sync"]["failureStage"] == stage


def test_legacy_sync_of_another_type_is_stored_and_ignored(company: dict[str, Any]) -> None:
    body = legacy_sync_event(company, "sync-1")
    body["Data"]["syncType"] = "Commerce"
    event = intake(body)
    assert event.event_type == "legacy.Sync Completed"
    assert "sync" not in event.fields


def test_a_failed_sync_folds_into_the_state_and_the_table(
    tmp_path: Path, company: dict[str, Any]
) -> None:
    store = open_db(tmp_path / "processor.db")
    try:
        event = intake(sync_event("expenses.sync.unsuccessful", company, "sync-1", FAILING))
        with store.transaction():
            store.append_events([event])
        fold_like_the_worker(store)
        row = store.company(company["id"])
        assert row is not None
        [kept] = row.data["syncs"]
        assert (kept["sync_id"], kept["outcome"]) == ("sync-1", "failed")
        [stored] = store.syncs(company["id"], limit=10).syncs
        assert stored.data == kept
        assert [t["error"] for t in stored.data["transactions"]] == [
            None,
            "Supplier is archived in Xero",
        ]
    finally:
        store.close()

"""`evolve`, the fold's copy of a frozen record with some fields changed: what
`dataclasses.replace` gives, for every record the handlers copy."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any

import pytest

from handlers.copies import build, evolve
from handlers.events import Connection, Event
from handlers.state import CompanyState, ExpensesConfiguration
from handlers.syncs import SyncRecord, SyncTransaction
from handlers.transitions import Transition

CONNECTION = Connection("conn-1", "Linked", "gbol", "Xero", "Accounting")
STATE = CompanyState(
    "company-1",
    name="Acme",
    accounting_connection=CONNECTION,
    watermarks={"company": "2024-01-01T00:00:00.0000000Z#0"},
    configuration=ExpensesConfiguration("bank", None, "customer", "2024-01-02"),
)
RECORD = SyncRecord("sync-1", "2024-01-03", "failed", "0#x", (SyncTransaction("t", "Failed"),), "")

CASES: list[tuple[Any, dict[str, Any]]] = [
    (STATE, {"name": "Other", "deleted": True}),
    (STATE, {"watermarks": {"role:accounting": "2024-02-01"}}),
    (STATE, {}),
    (CONNECTION, {"status": "Unlinked", "source_type": None}),
    (RECORD, {"at": "2024-01-01", "transactions": None}),
    (Transition(STATE, (), "applied"), {"outcome": "stale"}),
]


@pytest.mark.parametrize(("record", "changes"), CASES)
def test_evolve_is_dataclasses_replace(record: Any, changes: dict[str, Any]) -> None:
    copy = evolve(record, **changes)
    expected = dataclasses.replace(record, **changes)
    assert type(copy) is type(expected)
    assert copy == expected
    assert vars(copy) == vars(expected)
    assert copy is not record
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.company_id = "changed"  # still frozen


def test_an_unknown_field_is_refused_as_replace_refuses_it() -> None:
    with pytest.raises(TypeError, match="nickname"):
        evolve(STATE, nickname="Acme")


@dataclasses.dataclass(frozen=True)
class _Derived:
    value: int
    double: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "double", self.value * 2)


@dataclasses.dataclass(frozen=True)
class _Trimmed:
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", self.value.strip())


@dataclasses.dataclass(frozen=True)
class _Cached:
    value: int

    @cached_property
    def double(self) -> int:
        return self.value * 2


def test_records_that_compute_fields_are_copied_through_their_init() -> None:
    assert evolve(_Derived(1), value=5).double == 10
    assert evolve(_Trimmed("a"), value=" b ").value == "b"
    cached = _Cached(1)
    assert cached.double == 2
    assert evolve(cached, value=5).double == 10


EVENT = Event(
    "connection.created",
    "company-1",
    "2024-01-01T00:00:00.0000000Z",
    company_name="Acme",
    connection=CONNECTION,
    details={"bankAccount": "bank"},
    connection_ids=("conn-1",),
)


@pytest.mark.parametrize("record", [STATE, CONNECTION, RECORD, EVENT, *(r for r, _ in CASES)])
def test_build_from_every_field_is_the_class_called_with_them(record: Any) -> None:
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    built = build(type(record), values)
    expected = type(record)(**values)
    assert type(built) is type(expected)
    assert built == expected
    assert vars(built) == vars(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.company_id = "changed"  # still frozen


def test_build_leaves_defaults_and_unknown_fields_to_the_class() -> None:
    partial = build(Connection, {"id": "conn-1", "status": "Linked"})
    assert vars(partial) == vars(Connection("conn-1", "Linked"))  # the defaults filled in
    given: dict[str, Any] = {
        "event_type": "company.created",
        "company_id": "c",
        "generated_date": "d",
    }
    assert vars(build(Event, given)) == vars(Event(**given))
    # As many names as fields, one of them not a field: refused as the class refuses it.
    values = {f.name: None for f in dataclasses.fields(Connection)}
    del values["source_type"]
    with pytest.raises(TypeError, match="nickname"):
        build(Connection, {**values, "nickname": "x"})
    assert build(_Derived, {"value": 4}).double == 8
    assert build(_Trimmed, {"value": " b "}).value == "b"

"""The calls made to Codat about each company, on every backend: recorded in order, read per
company oldest first, and only the newest CALLS_KEPT of a company kept."""

from __future__ import annotations

from store import CodatCall, Store
from store.records import CALLS_KEPT
from tests.store.samples import COMPANY, T0, T1

OTHER = "other-company"


def _call(company_id: str, n: int, status: str = "200") -> CodatCall:
    return CodatCall(company_id, T0, f"GET /companies/{{id}}/call/{n}", status, 1.5 + n)


def test_calls_are_read_per_company_oldest_first_with_every_field(store: Store) -> None:
    failed = CodatCall(
        COMPANY,
        T1,
        "POST /companies/{id}/sync/expenses/connections/partnerExpense",
        "400",
        12.25,
        correlation_id="6b3f1b7ffeee4d1c92abb35efc74c923",
    )
    dropped = CodatCall(COMPANY, T1, "GET /companies/{id}", "connection_error", 3.0, error="reset")
    with store.transaction():
        store.record_codat_calls([_call(COMPANY, 1), _call(OTHER, 2)])
        store.record_codat_calls([failed, dropped])
        store.record_codat_calls([])
    assert store.codat_calls(COMPANY) == [_call(COMPANY, 1), failed, dropped]
    assert store.codat_calls(OTHER) == [_call(OTHER, 2)]
    assert store.codat_calls(COMPANY, limit=2) == [failed, dropped]
    assert store.codat_calls("nobody") == []


def test_only_the_newest_calls_of_a_company_are_kept(store: Store) -> None:
    with store.transaction():
        store.record_codat_calls([_call(COMPANY, n) for n in range(CALLS_KEPT - 10)])
        store.record_codat_calls([_call(OTHER, 0)])
    with store.transaction():
        store.record_codat_calls(
            [_call(COMPANY, n) for n in range(CALLS_KEPT - 10, CALLS_KEPT + 5)]
        )
    kept = store.codat_calls(COMPANY, limit=CALLS_KEPT * 2)
    assert [c.operation for c in kept] == [
        _call(COMPANY, n).operation for n in range(5, CALLS_KEPT + 5)
    ]
    assert store.codat_calls(OTHER) == [_call(OTHER, 0)]  # another company's calls stay

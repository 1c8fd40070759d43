"""The partner expense connection whatever its sourceType (CODAT.md: "most likely Expense",
unknown; build for both cases), with the answer of its creating POST lost and Codat's
idempotency window (90 minutes) passed before the retry: the retry's look-before-create finds
the connection Codat created since the command was opened and adopts it, rather than POST a
second one.

The stand-in plays Codat: its partner connections get the sourceType `Other`, its
idempotency keys expire after 0.1 s, and the first POST creates the connection but its answer
is dropped (holdAfterCreate with drop).
"""

from __future__ import annotations

from typing import Any

import pytest

from processor.sandbox.errors import PARTNER_EXPENSE_KEY
from processor.work.effects import existing_partner_connection
from tests.cli_support import PARTNER_EXPENSE_PATH, requests_to
from tests.conftest import Codat
from tests.support import ServeProcess, wait_for


def made_by_codat(codat: Codat, company_id: str) -> list[dict[str, Any]]:
    """The partner expense connections the stand-in created for the company, whatever type."""
    [company] = [c for c in codat.state()["companies"] if c["id"] == company_id]
    return [
        c
        for c in company["connections"]
        if c["integrationKey"] == PARTNER_EXPENSE_KEY and not c["deleted"]
    ]


def test_a_lost_answer_past_the_idempotency_window_is_adopted_whatever_its_type(
    codat: Codat, serve: ServeProcess
) -> None:
    sandbox = codat.server.sandbox
    sandbox.partner_source_type = "Other"
    sandbox.idempotency.ttl = 0.1
    company = codat.create_company("Other Source Ltd")
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.faults(
        [{"method": "POST", "path": PARTNER_EXPENSE_PATH, "holdAfterCreate": 0.2, "drop": True}]
    )
    codat.authorize(company["id"], connection["id"])

    document = serve.wait_state(company["id"], "ready")
    [partner] = made_by_codat(codat, company["id"])
    assert partner["sourceType"] == "Other"
    assert document["expenseConnection"]["id"] == partner["id"]
    assert len(requests_to(codat, "POST", "/partnerExpense")) == 1, "one creating POST only"


OPENED = "2026-12-07T10:00:00.5000000Z"


def listed(source_type: str | None, created: str, status: str = "Linked") -> dict[str, Any]:
    return {
        "id": f"{source_type}-{created}",
        "sourceType": source_type,
        "created": created,
        "status": status,
    }


@pytest.mark.parametrize(
    ("connections", "adopted"),
    [
        ([listed("Accounting", "2026-12-07T10:00:01Z")], None),
        ([listed("Banking", "2026-12-07T10:00:01Z"), listed("Commerce", "2026-12-07T11Z")], None),
        # Another type, but there before the command was opened: not ours.
        ([listed("Other", "2026-12-07T09:59:59Z")], None),
        ([listed("Other", "2026-12-07T10:00:00Z")], "Other-2026-12-07T10:00:00Z"),  # same second
        ([listed("Unknown", "2026-12-07T10:00:01")], "Unknown-2026-12-07T10:00:01"),  # no zone
        ([listed("Other", "soon")], None),
        ([listed(None, "2026-12-07T10:00:01Z")], None),  # no type: not one of Codat's
        (
            [
                listed("Expense", "2026-12-07T09:00:00Z", "Unlinked"),
                listed("Expense", "2026-12-07T08:00:00Z"),
                listed("Other", "2026-12-07T10:00:01Z"),
            ],
            "Expense-2026-12-07T08:00:00Z",  # an Expense one first, a Linked one of those
        ),
    ],
    ids=[
        "accounting",
        "banking-commerce",
        "other-before",
        "other-same-second",
        "unknown-after",
        "unreadable-date",
        "no-type",
        "expense-linked-first",
    ],
)
def test_which_connection_is_taken_for_the_partner_one(
    connections: list[dict[str, Any]], adopted: str | None
) -> None:
    found = existing_partner_connection(connections, opened_at=OPENED)
    assert (found[0]["id"] if found else None) == adopted

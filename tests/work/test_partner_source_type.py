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

import asyncio
import time
from typing import Any

import pytest

from handlers.commands import CREATE_PARTNER_EXPENSE_CONNECTION
from processor import clock
from processor.codat.client import CodatClient, new_client
from processor.sandbox.errors import PARTNER_EXPENSE_KEY
from processor.work.effects import (
    Attempt,
    create_partner_expense_connection,
    existing_partner_connection,
)
from store import Effect
from tests.cli_support import PARTNER_EXPENSE_PATH, requests_to
from tests.conftest import Codat
from tests.support import API_KEY, ServeProcess, wait_for


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


def test_what_an_earlier_command_created_is_adopted_by_the_next_one(codat: Codat) -> None:
    """The customer unlinked while the first command's POST was answered (the answer lost),
    then linked again: the next command (another Idempotency-Key, opened later) adopts the
    `Other` connection the first one created, since the company's first command was opened."""
    sandbox = codat.server.sandbox
    sandbox.partner_source_type = "Other"
    company = codat.create_company("Relinked Other Ltd")
    connection = codat.create_connection(company["id"], "gbol")
    codat.authorize(company["id"], connection["id"])
    first_opened = clock.now()
    path = f"/companies/{company['id']}/sync/expenses/connections/partnerExpense"
    made = codat.http.post(path, headers={"Idempotency-Key": "first-command"})
    assert made.status_code == 200, made.text
    time.sleep(1.1)  # Codat's `created` is to the second: the next command opens a second later

    def attempt(first_of_kind_at: str | None) -> Attempt:
        opened = clock.now()
        effect = Effect(
            id=2,
            company_id=company["id"],
            kind=CREATE_PARTNER_EXPENSE_CONNECTION,
            connection_id=connection["id"],
            idempotency_key=f"next-command-{first_of_kind_at}",
            caused_by=None,
            status="pending",
            attempts=0,
            next_attempt_at=opened,
            last_error=None,
            result=None,
            created_at=opened,
            updated_at=opened,
            first_of_kind_at=first_of_kind_at,
        )

        async def run() -> Attempt:
            async with new_client(codat.url, API_KEY) as http:
                return await create_partner_expense_connection(CodatClient(http), effect)

        return asyncio.run(run())

    adopted = attempt(first_opened)
    assert adopted.note.startswith("adopted"), adopted.note
    assert adopted.connection is not None and adopted.connection["id"] == made.json()["id"]
    # Counted from its own opening instead, the next command would have made a second one.
    assert attempt(None).note == "created"
    assert len(made_by_codat(codat, company["id"])) == 2


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

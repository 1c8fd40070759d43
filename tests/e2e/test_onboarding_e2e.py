"""End to end: the real `serve` process and the stand-in for Codat, over loopback HTTP."""

from __future__ import annotations

import pytest

from tests.conftest import Codat
from tests.support import ServeProcess, partner_connections, wait_for

pytestmark = pytest.mark.backends("sqlite", "postgres")


def test_company_goes_from_created_to_ready_with_one_partner_connection(
    codat: Codat, serve: ServeProcess
) -> None:
    company = codat.create_company("Sawayn Group")
    wait_for(lambda: serve.state_of(company["id"]) == "created", what="created")
    connection = codat.create_connection(company["id"], "qhyg")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.authorize(company["id"], connection["id"])
    document = serve.wait_state(company["id"], "ready")
    assert document["accountingConnection"]["id"] == connection["id"]
    assert document["accountingConnection"]["status"] == "Linked"
    assert document["accountingConnection"]["platformKey"] == "qhyg"
    partners = partner_connections(codat.state(), company["id"])
    assert len(partners) == 1
    assert document["expenseConnection"]["id"] == partners[0]["id"]
    outcomes = [e["outcome"] for e in document["events"]]
    assert "pending" not in outcomes

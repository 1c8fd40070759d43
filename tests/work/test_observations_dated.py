"""An observation of Codat's state made before creating the partner expense connection (the
accounting connection no longer Linked, or gone) is dated when Codat was asked, not when its
answer was recorded: a webhook generated while the call was under way is newer and wins.
Codat is an httpx MockTransport (the edge) that answers slowly; the store is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from handlers.commands import CREATE_PARTNER_EXPENSE_CONNECTION
from handlers.transitions import CONNECTION_OBSERVED
from processor import clock
from processor.codat.client import CodatClient, new_client
from processor.work.effects import Attempt, create_partner_expense_connection, record_attempt
from store import open_store

SLOW = 0.5


def slow_codat(request: httpx.Request) -> httpx.Response:
    time.sleep(SLOW)  # Codat takes its time; the accounting connection is Unlinked by then
    if request.url.path.endswith("/connections"):
        return httpx.Response(200, json={"results": [], "totalResults": 0})
    return httpx.Response(
        200, json={"id": "acc-1", "status": "Unlinked", "sourceType": "Accounting"}
    )


def test_the_check_before_creating_is_dated_when_codat_was_asked(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'processor.db'}")
    try:
        with store.transaction():
            effect_id = store.open_effect(
                company_id="co-1",
                kind=CREATE_PARTNER_EXPENSE_CONNECTION,
                connection_id="acc-1",
                idempotency_key="key-1",
                caused_by=None,
                now=clock.now(),
            )
        assert effect_id is not None
        effect = store.effect(effect_id)
        assert effect is not None

        async def attempt() -> Attempt:
            http = new_client("http://codat.test", "key", transport=httpx.MockTransport(slow_codat))
            async with http:
                return await create_partner_expense_connection(CodatClient(http), effect)

        asked = clock.now()
        found = asyncio.run(attempt())
        with store.transaction():
            record_attempt(store, effect, found, clock.now())
        [observed] = [e for e in store.company_events("co-1", 10) if e.source == "command"]
        assert observed.event_type == CONNECTION_OBSERVED
        answered = clock.after(SLOW, clock.parse(asked))
        assert asked <= observed.generated_date < answered, (asked, observed, answered)
        assert observed.received_at >= answered
    finally:
        store.close()

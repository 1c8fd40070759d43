"""The writer on a server (PostgreSQL): several transactions in flight at once.

A batch whose INSERT waits on the server (here: another session holds an uncommitted row with
the same message id, so the unique index makes it wait) must not hold back the webhooks that
come after it: they are committed on another of the writer's connections meanwhile, and the
waiting one is stored once the other session gives up its row.
"""

from __future__ import annotations

import asyncio
import dataclasses

import psycopg

from processor.intake.writer import SERVER_LANES, Writer
from store.postgres.events import COLUMNS, _values
from tests.intake.test_writer import company_created


def test_a_batch_waiting_on_the_server_does_not_hold_back_the_next(postgres_url: str) -> None:
    assert SERVER_LANES > 1
    blocked = company_created("Held Ltd", message_id="msg_held")
    others = [company_created(f"Free {n} Ltd") for n in range(20)]

    async def scenario(holder: psycopg.Connection) -> tuple[list[str], str]:
        writer = Writer(postgres_url)
        writer.start()
        try:
            waiting = asyncio.create_task(writer.append(blocked))
            await asyncio.sleep(0.3)  # its INSERT now waits for the holder's row
            assert not waiting.done()
            results = await asyncio.wait_for(
                asyncio.gather(*(writer.append(event) for event in others)), timeout=10
            )
            assert not waiting.done()  # still waiting: the others went past it
            holder.rollback()
            held = await asyncio.wait_for(waiting, timeout=10)
            return [result.status for result in results], held.status
        finally:
            await writer.stop()

    with psycopg.connect(postgres_url) as holder:
        # The writer's first connection creates the schema; then the holder takes the row.
        asyncio.run(_migrate(postgres_url))
        holder.execute(
            f"INSERT INTO events ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            _values(dataclasses.replace(blocked, event_id="evt_holder"), None),
        )
        statuses, held = asyncio.run(scenario(holder))
    assert statuses == ["stored"] * len(others)
    assert held == "stored"
    with psycopg.connect(postgres_url) as check:
        row = check.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE message_id = 'msg_held') FROM events"
        ).fetchone()
    assert row == (len(others) + 1, 1)


async def _migrate(url: str) -> None:
    writer = Writer(url, lanes=1)
    writer.start()
    await writer.stop()

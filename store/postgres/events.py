"""The event log: append (deduplicated by message id and event id), read, mark folded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from store.postgres import rows
from store.postgres.connected import Connected
from store.records import (
    DUPLICATE_MESSAGE,
    EFFECT_FAILED,
    REQUEUED,
    STORED,
    InsertResult,
    NewEvent,
    StoredEvent,
)

# json.dumps with separators builds an encoder at every call (half of its 3.7 us here).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class PostgresEventLog(Connected):
    """Every webhook and synthetic event, in order of receipt."""

    def append_events(self, events: Sequence[NewEvent]) -> list[InsertResult]:
        """Append events; a known message id or event id is a duplicate, not a second row.

        The batch goes in as one multi-row INSERT (one round trip for a whole group commit);
        the rows it left out on a conflict (a repeated message or event id, rare) are then
        sorted out one by one, in order."""
        if len(events) <= 1:
            return [self._append(event) for event in events]
        inserted = self._insert_many(events)
        results = []
        for event in events:
            seq = inserted.pop(event.message_id, None)
            results.append(InsertResult(seq, STORED) if seq is not None else self._append(event))
        return results

    def _insert_many(self, events: Sequence[NewEvent]) -> dict[str, int]:
        """Insert what does not conflict; the seq of each row inserted, by message id.

        One array per column (`INSERT_MANY`): the statement's text is the same for every
        batch, so psycopg converts it once and the server prepares it. A VALUES list of one
        placeholder per value made a new text for every batch size, too long for psycopg's
        cache: converting it took 1 ms of a 1.3 ms insert of 16 events, in the writer's
        thread, holding the GIL the event loop needs."""
        columns: list[list[Any]] = [[] for _ in COLUMNS]
        for event in events:
            for column, value in zip(columns, _values(event, None), strict=True):
                column.append(value)
        found = self.conn.execute(INSERT_MANY, columns)
        return {str(message_id): int(seq) for seq, message_id in found}

    def _append(self, event: NewEvent) -> InsertResult:
        # The common case, a new event, costs one statement; a conflict on either unique key
        # (message id, event id) inserts nothing (and aborts nothing) and is sorted out below.
        seq = self._insert(event, None, "ON CONFLICT DO NOTHING")
        if seq is not None:
            return InsertResult(seq, STORED)
        existing = self.conn.execute(
            "UPDATE events SET deliveries = deliveries + 1, last_delivered_at = %s "
            "WHERE message_id = %s RETURNING seq",
            [event.received_at, event.message_id],
        ).fetchone()
        if existing is not None:
            seq = int(existing[0])
            requeued = self._requeue_failed(seq, event.received_at)
            return InsertResult(seq, REQUEUED if requeued else DUPLICATE_MESSAGE)
        # Same event id under another message id: kept, marked as a duplicate, not folded.
        original = self.conn.execute(
            "SELECT seq FROM events WHERE event_id = %s AND duplicate_of IS NULL",
            [event.event_id],
        ).fetchone()
        if original is None:
            raise RuntimeError(f"event {event.message_id!r} conflicts with no stored event")
        seq = self._insert(event, int(original[0]), "")
        assert seq is not None
        return InsertResult(seq, DUPLICATE_MESSAGE)

    def _insert(self, event: NewEvent, duplicate_of: int | None, conflict: str) -> int | None:
        """The new row's seq, or None if a conflict left it out."""
        row = self.conn.execute(
            f"INSERT INTO events ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) {conflict} RETURNING seq",
            _values(event, duplicate_of),
        ).fetchone()
        return int(row[0]) if row is not None else None

    def pending_company_ids(self, limit: int = 1000) -> list[str]:
        """Companies with events not yet folded into their state."""
        found = self.conn.execute(
            "SELECT DISTINCT company_id FROM events "
            "WHERE processed_at IS NULL AND company_id IS NOT NULL ORDER BY company_id LIMIT %s",
            [limit],
        )
        return [row[0] for row in found]

    def pending_events(self, company_id: str) -> list[StoredEvent]:
        """A company's unfolded events, oldest generatedDate first."""
        return self._events(
            "WHERE company_id = %s AND processed_at IS NULL ORDER BY generated_date, seq",
            [company_id],
        )

    def pending_events_of(self, company_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """`pending_events` of several companies, in one query."""
        found: dict[str, list[StoredEvent]] = {company_id: [] for company_id in company_ids}
        for event in self._events(
            "WHERE company_id = ANY(%s) AND processed_at IS NULL "
            "ORDER BY company_id, generated_date, seq",
            [list(company_ids)],
        ):
            found[event.company_id or ""].append(event)
        return found

    def folded_events(self, company_id: str) -> list[StoredEvent]:
        """A company's folded events, in the order they were folded (for rebuilds)."""
        return self._events(
            "WHERE company_id = %s AND fold_order IS NOT NULL ORDER BY fold_order", [company_id]
        )

    def company_events(self, company_id: str, limit: int = 500) -> list[StoredEvent]:
        """A company's events in order of receipt, newest last."""
        return self._events(
            "WHERE seq IN (SELECT seq FROM events WHERE company_id = %s "
            "ORDER BY seq DESC LIMIT %s) ORDER BY seq",
            [company_id, limit],
        )

    def event(self, seq: int) -> StoredEvent | None:
        found = self._events("WHERE seq = %s", [seq])
        return found[0] if found else None

    def find_events(
        self,
        *,
        company_id: str | None = None,
        event_or_message_id: str | None = None,
        since: str | None = None,
        event_type: str | None = None,
        failed: bool = False,
    ) -> list[StoredEvent]:
        """Events matching every given criterion, in order of receipt."""
        where, params = _criteria(company_id, event_or_message_id, since, event_type, failed)
        return self._events(f"WHERE {where} ORDER BY seq", params)

    def count_matching(
        self,
        *,
        company_id: str | None = None,
        event_or_message_id: str | None = None,
        since: str | None = None,
        event_type: str | None = None,
        failed: bool = False,
    ) -> tuple[int, int]:
        """How many events match every given criterion, and of how many companies."""
        where, params = _criteria(company_id, event_or_message_id, since, event_type, failed)
        row = self.conn.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT company_id) FROM events WHERE {where}", params
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def matching_companies(
        self,
        *,
        company_id: str | None = None,
        event_or_message_id: str | None = None,
        since: str | None = None,
        event_type: str | None = None,
        failed: bool = False,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Companies with an event matching every criterion, by id: the first `limit` after
        `after` (a page; the last id of one is the next one's `after`)."""
        where, params = _criteria(company_id, event_or_message_id, since, event_type, failed)
        if after is not None:
            where += " AND company_id > %s"
            params.append(after)
        found = self.conn.execute(
            f"SELECT DISTINCT company_id FROM events WHERE {where} "
            "AND company_id IS NOT NULL ORDER BY company_id LIMIT %s",
            [*params, limit],
        )
        return [row[0] for row in found]

    def raw_event(self, seq: int) -> tuple[bytes, dict[str, str]] | None:
        """The raw body and headers of an event, as received (to re-verify or re-parse)."""
        row = self.conn.execute("SELECT body, headers FROM events WHERE seq = %s", [seq]).fetchone()
        if row is None:
            return None
        return bytes(row[0]), json.loads(row[1])

    def mark_folded(self, outcomes: Sequence[tuple[int, str]], now: str) -> None:
        """Record that events were folded, in this order, with these outcomes."""
        row = self.conn.execute(
            "SELECT COALESCE(MAX(fold_order), 0) FROM events WHERE fold_order IS NOT NULL"
        ).fetchone()
        order = int(row[0]) if row else 0
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE events SET processed_at = %s, outcome = %s, fold_order = %s WHERE seq = %s",
                [(now, outcome, order + n, seq) for n, (seq, outcome) in enumerate(outcomes, 1)],
            )

    def set_outcomes(self, outcomes: Sequence[tuple[int, str]]) -> None:
        """Rewrite outcomes after a rebuild, keeping the fold order."""
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE events SET outcome = %s WHERE seq = %s",
                [(outcome, seq) for seq, outcome in outcomes],
            )

    def oldest_pending_received_at(self) -> str | None:
        """When the oldest event not yet folded was received (None: nothing is waiting)."""
        row = self.conn.execute(
            "SELECT MIN(received_at) FROM events "
            "WHERE processed_at IS NULL AND company_id IS NOT NULL"
        ).fetchone()
        return row[0] if row else None

    def count_events(self, *, pending: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM events"
        if pending:
            sql += " WHERE processed_at IS NULL AND company_id IS NOT NULL"
        row = self.conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def event_types(self) -> list[str]:
        """Every event type in the log, sorted."""
        found = self.conn.execute("SELECT DISTINCT event_type FROM events ORDER BY event_type")
        return [row[0] for row in found]

    def _requeue_failed(self, seq: int, now: str) -> bool:
        raise NotImplementedError  # the effects table's: see store/postgres/effects.py

    def _events(self, where: str, params: Sequence[Any]) -> list[StoredEvent]:
        found = self.conn.execute(f"SELECT {rows.EVENT_COLUMNS} FROM events {where}", list(params))
        return [rows.stored_event(row) for row in found]


COLUMNS = (
    "message_id",
    "event_id",
    "event_type",
    "body_format",
    "source",
    "company_id",
    "connection_id",
    "generated_date",
    "received_at",
    "fields",
    "body",
    "headers",
    "last_delivered_at",
    "duplicate_of",
    "processed_at",
    "outcome",
)


# The type of each of COLUMNS, for the arrays of `_insert_many`.
_TYPES = ("text",) * 10 + ("bytea", "text", "text", "bigint", "text", "text")
# Rows in the order of the batch (WITH ORDINALITY ... ORDER BY): seqs follow arrival, as before.
INSERT_MANY = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(COLUMNS)} FROM unnest({', '.join(f'%b::{t}[]' for t in _TYPES)}) "
    f"WITH ORDINALITY AS batch({', '.join(COLUMNS)}, position) ORDER BY position "
    "ON CONFLICT DO NOTHING RETURNING seq, message_id"
)


def _values(event: NewEvent, duplicate_of: int | None) -> list[Any]:
    """An event's row, in the order of COLUMNS."""
    duplicate = duplicate_of is not None
    return [
        event.message_id,
        event.event_id,
        event.event_type,
        event.body_format,
        event.source,
        event.company_id,
        event.connection_id,
        event.generated_date,
        event.received_at,
        _COMPACT.encode(event.fields),
        event.body,
        _COMPACT.encode(event.headers),
        event.received_at,
        duplicate_of,
        event.received_at if duplicate or event.outcome else None,
        "duplicate" if duplicate else event.outcome,
    ]


def _criteria(
    company_id: str | None,
    event_or_message_id: str | None,
    since: str | None,
    event_type: str | None,
    failed: bool,
) -> tuple[str, list[Any]]:
    """A WHERE clause (and its parameters) for the selectors of `find_events`."""
    where, params = ["TRUE"], []
    if company_id is not None:
        where.append("company_id = %s")
        params.append(company_id)
    if event_or_message_id is not None:
        where.append("(event_id = %s OR message_id = %s)")
        params += [event_or_message_id, event_or_message_id]
    if since is not None:
        where.append("generated_date >= %s")
        params.append(since)
    if event_type is not None:
        where.append("event_type = %s")
        params.append(event_type)
    if failed:
        where.append("seq IN (SELECT caused_by FROM effects WHERE status = %s)")
        params.append(EFFECT_FAILED)
    return " AND ".join(where), params

"""The event log: append (deduplicated by message id and event id), read, mark folded."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from store.records import (
    DUPLICATE_MESSAGE,
    EFFECT_FAILED,
    REQUEUED,
    STORED,
    InsertResult,
    NewEvent,
    StoredEvent,
)
from store.sqlite import rows
from store.sqlite.connected import Connected

# json.dumps with separators builds an encoder at every call (half of its 3.7 us here).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class SqliteEventLog(Connected):
    """Every webhook and synthetic event, in order of receipt."""

    def append_events(self, events: Sequence[NewEvent]) -> list[InsertResult]:
        """Append events; a known message id or event id is a duplicate, not a second row."""
        return [self._append(event) for event in events]

    def _append(self, event: NewEvent) -> InsertResult:
        # The common case, a new event, costs one statement; a conflict on either unique key
        # (message id, event id) inserts nothing and is sorted out below.
        cursor = self._insert(event, None, "ON CONFLICT DO NOTHING")
        if cursor.rowcount == 1:
            return InsertResult(int(cursor.lastrowid or 0), STORED)
        existing = self.conn.execute(
            "SELECT seq FROM events WHERE message_id = ?", [event.message_id]
        ).fetchone()
        if existing is not None:
            seq = int(existing[0])
            self.conn.execute(
                "UPDATE events SET deliveries = deliveries + 1, last_delivered_at = ? "
                "WHERE seq = ?",
                [event.received_at, seq],
            )
            requeued = self._requeue_failed(seq, event.received_at)
            return InsertResult(seq, REQUEUED if requeued else DUPLICATE_MESSAGE)
        # Same event id under another message id: kept, marked as a duplicate, not folded.
        original = self.conn.execute(
            "SELECT seq FROM events WHERE event_id = ? AND duplicate_of IS NULL",
            [event.event_id],
        ).fetchone()
        cursor = self._insert(event, int(original[0]), "")
        return InsertResult(int(cursor.lastrowid or 0), DUPLICATE_MESSAGE)

    def _insert(self, event: NewEvent, duplicate_of: int | None, conflict: str) -> sqlite3.Cursor:
        duplicate = duplicate_of is not None
        processed = event.received_at if duplicate or event.outcome else None
        return self.conn.execute(
            "INSERT INTO events (message_id, event_id, event_type, body_format, source, "
            "company_id, connection_id, generated_date, received_at, fields, body, headers, "
            "last_delivered_at, duplicate_of, processed_at, outcome) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {conflict}",
            [
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
                processed,
                "duplicate" if duplicate else event.outcome,
            ],
        )

    def pending_company_ids(self, limit: int = 1000) -> list[str]:
        """Companies with events not yet folded into their state."""
        found = self.conn.execute(
            "SELECT DISTINCT company_id FROM events "
            "WHERE processed_at IS NULL AND company_id IS NOT NULL LIMIT ?",
            [limit],
        )
        return [row[0] for row in found]

    def pending_events(self, company_id: str) -> list[StoredEvent]:
        """A company's unfolded events, oldest generatedDate first."""
        return self._events(
            "WHERE company_id = ? AND processed_at IS NULL ORDER BY generated_date, seq",
            [company_id],
        )

    def pending_events_of(self, company_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """`pending_events` of several companies, in one query."""
        found: dict[str, list[StoredEvent]] = {company_id: [] for company_id in company_ids}
        for start in range(0, len(company_ids), rows.MAX_PARAMETERS):
            chunk = list(company_ids[start : start + rows.MAX_PARAMETERS])
            marks = ", ".join("?" * len(chunk))
            for event in self._events(
                f"WHERE company_id IN ({marks}) AND processed_at IS NULL "
                "ORDER BY company_id, generated_date, seq",
                chunk,
            ):
                found[event.company_id or ""].append(event)
        return found

    def folded_events(self, company_id: str) -> list[StoredEvent]:
        """A company's folded events, in the order they were folded (for rebuilds)."""
        return self._events(
            "WHERE company_id = ? AND fold_order IS NOT NULL ORDER BY fold_order", [company_id]
        )

    def company_events(self, company_id: str, limit: int = 500) -> list[StoredEvent]:
        """A company's events in order of receipt, newest last."""
        return self._events(
            "WHERE seq IN (SELECT seq FROM events WHERE company_id = ? ORDER BY seq DESC LIMIT ?) "
            "ORDER BY seq",
            [company_id, limit],
        )

    def event(self, seq: int) -> StoredEvent | None:
        found = self._events("WHERE seq = ?", [seq])
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
        return int(row[0]), int(row[1])

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
            where += " AND company_id > ?"
            params.append(after)
        found = self.conn.execute(
            f"SELECT DISTINCT company_id FROM events WHERE {where} "
            "AND company_id IS NOT NULL ORDER BY company_id LIMIT ?",
            [*params, limit],
        )
        return [row[0] for row in found]

    def raw_event(self, seq: int) -> tuple[bytes, dict[str, str]] | None:
        """The raw body and headers of an event, as received (to re-verify or re-parse)."""
        row = self.conn.execute("SELECT body, headers FROM events WHERE seq = ?", [seq]).fetchone()
        if row is None:
            return None
        return bytes(row[0]), json.loads(row[1])

    def mark_folded(self, outcomes: Sequence[tuple[int, str]], now: str) -> None:
        """Record that events were folded, in this order, with these outcomes."""
        if not outcomes:
            return
        row = self.conn.execute(
            "SELECT COALESCE(MAX(fold_order), 0) FROM events WHERE fold_order IS NOT NULL"
        ).fetchone()
        order = int(row[0])
        self.conn.executemany(
            "UPDATE events SET processed_at = ?, outcome = ?, fold_order = ? WHERE seq = ?",
            [(now, outcome, order + n, seq) for n, (seq, outcome) in enumerate(outcomes, 1)],
        )

    def set_outcomes(self, outcomes: Sequence[tuple[int, str]]) -> None:
        """Rewrite outcomes after a rebuild, keeping the fold order."""
        self.conn.executemany(
            "UPDATE events SET outcome = ? WHERE seq = ?",
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
        return int(self.conn.execute(sql).fetchone()[0])

    def event_types(self) -> list[str]:
        """Every event type in the log, sorted."""
        found = self.conn.execute("SELECT DISTINCT event_type FROM events ORDER BY event_type")
        return [row[0] for row in found]

    def _requeue_failed(self, seq: int, now: str) -> bool:
        raise NotImplementedError  # the effects table's: see store/sqlite/effects.py

    def _events(self, where: str, params: Sequence[Any]) -> list[StoredEvent]:
        found = self.conn.execute(f"SELECT {rows.EVENT_COLUMNS} FROM events {where}", list(params))
        return [rows.stored_event(row) for row in found]


def _criteria(
    company_id: str | None,
    event_or_message_id: str | None,
    since: str | None,
    event_type: str | None,
    failed: bool,
) -> tuple[str, list[Any]]:
    """A WHERE clause (and its parameters) for the selectors of `find_events`."""
    where, params = ["1 = 1"], []
    if company_id is not None:
        where.append("company_id = ?")
        params.append(company_id)
    if event_or_message_id is not None:
        where.append("(event_id = ? OR message_id = ?)")
        params += [event_or_message_id, event_or_message_id]
    if since is not None:
        where.append("generated_date >= ?")
        params.append(since)
    if event_type is not None:
        where.append("event_type = ?")
        params.append(event_type)
    if failed:
        where.append("seq IN (SELECT caused_by FROM effects WHERE status = ?)")
        params.append(EFFECT_FAILED)
    return " AND ".join(where), params

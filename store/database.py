"""The SQLite store: the only module that speaks SQL.

One writable connection per process (the processor funnels every write through one thread);
any number of read-only connections for queries. WAL with synchronous=FULL: a commit is on disk
before it returns, so nothing is acknowledged that a crash could lose.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from store.records import (
    DUPLICATE_MESSAGE,
    EFFECT_FAILED,
    EFFECT_PENDING,
    REQUEUED,
    STORED,
    CompanyRow,
    Effect,
    InsertResult,
    NewEvent,
    Page,
    StoredEvent,
)
from store.schema import MIGRATIONS

_EVENT_COLUMNS = (
    "seq, message_id, event_id, event_type, body_format, source, company_id, connection_id, "
    "generated_date, received_at, fields, deliveries, processed_at, outcome, duplicate_of"
)
_EFFECT_COLUMNS = (
    "id, company_id, kind, connection_id, idempotency_key, caused_by, status, attempts, "
    "next_attempt_at, last_error, result, created_at, updated_at"
)


class StoreError(Exception):
    """The store cannot be opened or used (missing file, read-only, disk full, locked)."""


def _open_reader(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection that cannot write and leaves no new file behind.

    A `mode=ro` connection to a WAL database creates its `-wal` and `-shm` files and, being
    unable to write, never removes them (a root-owned `-shm` left behind can stop a `serve`
    running as another user). When no `-wal` exists, no other connection is open: a writable
    connection with `query_only` reads the same data and, being the last one, removes the files
    it made when it closes.
    """
    if not path.exists():
        raise StoreError(f"database file {str(path)!r} does not exist")
    wal = path.with_name(path.name + "-wal")
    if wal.exists() or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        conn = sqlite3.connect(
            f"file:{path.resolve()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=timeout,
        )
    else:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=timeout
        )
    conn.execute("PRAGMA query_only=ON")
    return conn


class Store:
    """The event log, company state and record of effects, in one SQLite file."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self.conn = conn
        self.db = Database(conn, execute_plugins=False)
        self.path = path
        self.readonly = readonly
        self._savepoints = 0

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False, timeout: float = 5.0) -> Store:
        """Open (and for writers, create and migrate) the store at `path`."""
        path = Path(path)
        try:
            if readonly:
                conn = _open_reader(path, timeout)
            else:
                conn = sqlite3.connect(
                    str(path), isolation_level=None, check_same_thread=False, timeout=timeout
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            store = cls(conn, path, readonly=readonly)
            if not readonly:
                store.migrate()
                # Fail now, not at the first webhook, if the file cannot be written.
                with store.transaction():
                    store.heartbeat(datetime.now(UTC).isoformat())
            return store
        except sqlite3.Error as error:
            raise StoreError(f"cannot open database {str(path)!r}: {error}") from error

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """One write transaction, taken immediately so concurrent writers queue, not deadlock."""
        if self.conn.in_transaction:
            yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def savepoint(self) -> Iterator[Store]:
        """A nested unit inside a transaction: undone alone if it fails."""
        self._savepoints += 1
        name = f"unit_{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version."""
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            done = {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations")}
            for version, script in MIGRATIONS:
                if version in done:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", [version])
        return max(version for version, _ in MIGRATIONS)

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def heartbeat(self, now: str) -> None:
        """A one-row write: proves the store can still commit (disk not full, not read-only)."""
        self.conn.execute(
            "INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = ?",
            [now, now],
        )

    def ping(self) -> None:
        """Raise StoreError unless the store answers a query."""
        try:
            self.conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
        except sqlite3.Error as error:
            raise StoreError(str(error)) from error

    # -- the event log -------------------------------------------------------------------------

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
                json.dumps(event.fields, separators=(",", ":")),
                event.body,
                json.dumps(event.headers, separators=(",", ":")),
                event.received_at,
                duplicate_of,
                processed,
                "duplicate" if duplicate else event.outcome,
            ],
        )

    def _requeue_failed(self, seq: int, now: str) -> bool:
        """A new delivery of an event whose effect failed puts that effect back in line."""
        row = self.conn.execute(
            "SELECT id, company_id, kind FROM effects WHERE caused_by = ? AND status = ? "
            "ORDER BY id DESC LIMIT 1",
            [seq, EFFECT_FAILED],
        ).fetchone()
        if row is None:
            return False
        return self.requeue_effect(int(row[0]), now)

    def pending_company_ids(self, limit: int = 1000) -> list[str]:
        """Companies with events not yet folded into their state."""
        rows = self.conn.execute(
            "SELECT DISTINCT company_id FROM events "
            "WHERE processed_at IS NULL AND company_id IS NOT NULL LIMIT ?",
            [limit],
        )
        return [row[0] for row in rows]

    def pending_events(self, company_id: str) -> list[StoredEvent]:
        """A company's unfolded events, oldest generatedDate first."""
        return self._events(
            "WHERE company_id = ? AND processed_at IS NULL ORDER BY generated_date, seq",
            [company_id],
        )

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
        return self._events(f"WHERE {' AND '.join(where)} ORDER BY seq", params)

    def raw_event(self, seq: int) -> tuple[bytes, dict[str, str]] | None:
        """The raw body and headers of an event, as received (to re-verify or re-parse)."""
        row = self.conn.execute("SELECT body, headers FROM events WHERE seq = ?", [seq]).fetchone()
        if row is None:
            return None
        return bytes(row[0]), json.loads(row[1])

    def mark_folded(self, outcomes: Sequence[tuple[int, str]], now: str) -> None:
        """Record that events were folded, in this order, with these outcomes."""
        row = self.conn.execute(
            "SELECT COALESCE(MAX(fold_order), 0) FROM events WHERE fold_order IS NOT NULL"
        ).fetchone()
        order = int(row[0])
        for seq, outcome in outcomes:
            order += 1
            self.conn.execute(
                "UPDATE events SET processed_at = ?, outcome = ?, fold_order = ? WHERE seq = ?",
                [now, outcome, order, seq],
            )

    def set_outcomes(self, outcomes: Sequence[tuple[int, str]]) -> None:
        """Rewrite outcomes after a rebuild, keeping the fold order."""
        self.conn.executemany(
            "UPDATE events SET outcome = ? WHERE seq = ?",
            [(outcome, seq) for seq, outcome in outcomes],
        )

    def count_events(self, *, pending: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM events"
        if pending:
            sql += " WHERE processed_at IS NULL AND company_id IS NOT NULL"
        return int(self.conn.execute(sql).fetchone()[0])

    def _events(self, where: str, params: Sequence[Any]) -> list[StoredEvent]:
        rows = self.conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events {where}", list(params))
        return [_stored_event(row) for row in rows]

    # -- company state -------------------------------------------------------------------------

    def company(self, company_id: str) -> CompanyRow | None:
        row = self.conn.execute(
            "SELECT company_id, state, data, updated_at, checked_at FROM companies "
            "WHERE company_id = ?",
            [company_id],
        ).fetchone()
        return _company_row(row) if row is not None else None

    def save_company(self, company_id: str, state: str, data: dict[str, Any], now: str) -> None:
        self.conn.execute(
            "INSERT INTO companies (company_id, state, data, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (company_id) DO UPDATE SET state = excluded.state, "
            "data = excluded.data, updated_at = excluded.updated_at",
            [company_id, state, json.dumps(data, separators=(",", ":")), now],
        )

    def mark_checked(self, company_id: str, now: str) -> None:
        self.conn.execute(
            "UPDATE companies SET checked_at = ? WHERE company_id = ?", [now, company_id]
        )

    def delete_company_state(self, company_id: str) -> None:
        self.conn.execute("DELETE FROM companies WHERE company_id = ?", [company_id])

    def companies(self, *, state: str | None, limit: int, after: str | None) -> Page:
        """A page of companies ordered by id, optionally in one state."""
        where, params = ["1 = 1"], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if after is not None:
            where.append("company_id > ?")
            params.append(after)
        rows = self.conn.execute(
            "SELECT company_id, state, data, updated_at, checked_at FROM companies "
            f"WHERE {' AND '.join(where)} ORDER BY company_id LIMIT ?",
            [*params, limit + 1],
        ).fetchall()
        page = [_company_row(row) for row in rows[:limit]]
        next_after = page[-1].company_id if len(rows) > limit and page else None
        return Page(page, next_after)

    def company_ids(self) -> list[str]:
        """Every company that has an event or a state."""
        rows = self.conn.execute(
            "SELECT company_id FROM companies UNION "
            "SELECT DISTINCT company_id FROM events WHERE company_id IS NOT NULL"
        )
        return sorted(row[0] for row in rows)

    def knows_company(self, company_id: str) -> bool:
        """Whether the store has a state or any event for this company."""
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM companies WHERE company_id = ?) "
            "OR EXISTS (SELECT 1 FROM events WHERE company_id = ?)",
            [company_id, company_id],
        ).fetchone()
        return bool(row[0])

    def companies_named(self, name: str) -> list[str]:
        """Ids of the stored companies with exactly this name."""
        rows = self.conn.execute(
            "SELECT company_id FROM companies WHERE json_extract(data, '$.name') = ? "
            "ORDER BY company_id",
            [name],
        )
        return [row[0] for row in rows]

    def event_types(self) -> list[str]:
        """Every event type in the log, sorted."""
        rows = self.conn.execute("SELECT DISTINCT event_type FROM events ORDER BY event_type")
        return [row[0] for row in rows]

    def state_counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, COUNT(*) FROM companies GROUP BY state")
        return {row[0]: int(row[1]) for row in rows}

    # -- effects ---------------------------------------------------------------------------------

    def open_effect(
        self,
        *,
        company_id: str,
        kind: str,
        connection_id: str | None,
        idempotency_key: str,
        caused_by: int | None,
        now: str,
    ) -> int | None:
        """Record the intent to carry out an effect, unless one is already open for it."""
        cursor = self.conn.execute(
            "INSERT INTO effects (company_id, kind, connection_id, idempotency_key, caused_by, "
            "status, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [
                company_id,
                kind,
                connection_id,
                idempotency_key,
                caused_by,
                EFFECT_PENDING,
                now,
                now,
                now,
            ],
        )
        return int(cursor.lastrowid or 0) if cursor.rowcount else None

    def effect(self, effect_id: int) -> Effect | None:
        found = self._effects("WHERE id = ?", [effect_id])
        return found[0] if found else None

    def open_effects(self, company_id: str) -> list[Effect]:
        return self._effects("WHERE company_id = ? AND status = ?", [company_id, EFFECT_PENDING])

    def company_effects(self, company_id: str) -> list[Effect]:
        return self._effects("WHERE company_id = ? ORDER BY id", [company_id])

    def failed_effects(self) -> list[Effect]:
        return self._effects("WHERE status = ? ORDER BY id", [EFFECT_FAILED])

    def due_effects(self, now: str, limit: int = 100) -> list[Effect]:
        """Pending effects whose next attempt is due and that no live worker has claimed."""
        return self._effects(
            "WHERE status = ? AND next_attempt_at <= ? "
            "AND (claim_expires_at IS NULL OR claim_expires_at <= ?) "
            "ORDER BY next_attempt_at LIMIT ?",
            [EFFECT_PENDING, now, now, limit],
        )

    def next_effect_due(self) -> str | None:
        row = self.conn.execute(
            "SELECT MIN(next_attempt_at) FROM effects WHERE status = ?", [EFFECT_PENDING]
        ).fetchone()
        return row[0] if row else None

    def claim_effect(self, effect_id: int, owner: str, until: str, now: str) -> bool:
        """Take an effect for one attempt; False if another worker holds it or it is closed."""
        cursor = self.conn.execute(
            "UPDATE effects SET claimed_by = ?, claim_expires_at = ? WHERE id = ? "
            "AND status = ? AND (claim_expires_at IS NULL OR claim_expires_at <= ?)",
            [owner, until, effect_id, EFFECT_PENDING, now],
        )
        return cursor.rowcount == 1

    def claim_owners(self) -> list[str]:
        """Owners of claims that have not expired or been released."""
        rows = self.conn.execute(
            "SELECT DISTINCT claimed_by FROM effects WHERE status = ? AND claimed_by IS NOT NULL",
            [EFFECT_PENDING],
        )
        return [row[0] for row in rows]

    def release_claims(self, owner: str) -> int:
        """Release every claim of an owner known to be dead, so its work need not wait."""
        cursor = self.conn.execute(
            "UPDATE effects SET claimed_by = NULL, claim_expires_at = NULL "
            "WHERE claimed_by = ? AND status = ?",
            [owner, EFFECT_PENDING],
        )
        return cursor.rowcount

    def finish_effect(
        self,
        effect_id: int,
        *,
        status: str,
        now: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Close an effect: done, failed (a dead letter) or cancelled."""
        self.conn.execute(
            "UPDATE effects SET status = ?, result = ?, last_error = COALESCE(?, last_error), "
            "attempts = attempts + 1, claimed_by = NULL, claim_expires_at = NULL, "
            "updated_at = ? WHERE id = ?",
            [status, _json_or_none(result), error, now, effect_id],
        )

    def retry_effect(self, effect_id: int, *, error: str, next_attempt_at: str, now: str) -> None:
        """Count a failed attempt and schedule the next one."""
        self.conn.execute(
            "UPDATE effects SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = ? WHERE id = ?",
            [error, next_attempt_at, now, effect_id],
        )

    def requeue_effect(self, effect_id: int, now: str) -> bool:
        """Put a failed effect back in line, unless another one is already open for it."""
        cursor = self.conn.execute(
            "UPDATE OR IGNORE effects SET status = ?, attempts = 0, next_attempt_at = ?, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = ? "
            "WHERE id = ? AND status = ?",
            [EFFECT_PENDING, now, now, effect_id, EFFECT_FAILED],
        )
        return cursor.rowcount == 1

    def close_effect(self, effect_id: int, status: str, now: str) -> None:
        """Close an open effect the state no longer calls for (cancelled)."""
        self.conn.execute(
            "UPDATE effects SET status = ?, claimed_by = NULL, claim_expires_at = NULL, "
            "updated_at = ? WHERE id = ? AND status = ?",
            [status, now, effect_id, EFFECT_PENDING],
        )

    def _effects(self, where: str, params: Sequence[Any]) -> list[Effect]:
        rows = self.conn.execute(f"SELECT {_EFFECT_COLUMNS} FROM effects {where}", list(params))
        return [_effect(row) for row in rows]


def _json_or_none(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _stored_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        seq=row[0],
        message_id=row[1],
        event_id=row[2],
        event_type=row[3],
        body_format=row[4],
        source=row[5],
        company_id=row[6],
        connection_id=row[7],
        generated_date=row[8],
        received_at=row[9],
        fields=json.loads(row[10]),
        deliveries=row[11],
        processed_at=row[12],
        outcome=row[13],
        duplicate_of=row[14],
    )


def _effect(row: Sequence[Any]) -> Effect:
    return Effect(
        id=row[0],
        company_id=row[1],
        kind=row[2],
        connection_id=row[3],
        idempotency_key=row[4],
        caused_by=row[5],
        status=row[6],
        attempts=row[7],
        next_attempt_at=row[8],
        last_error=row[9],
        result=json.loads(row[10]) if row[10] else None,
        created_at=row[11],
        updated_at=row[12],
    )


def _company_row(row: Sequence[Any]) -> CompanyRow:
    return CompanyRow(
        company_id=row[0],
        state=row[1],
        data=json.loads(row[2]),
        updated_at=row[3],
        checked_at=row[4],
    )

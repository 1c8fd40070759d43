"""One PostgreSQL connection: opening, transactions, migrations, health.

Synchronous psycopg 3, because the store's contract is synchronous (the processor calls it from
its writer and worker threads); an async driver and a connection pool come with the
multi-instance work. The connection is in autocommit mode and transactions are explicit
(`BEGIN`/`COMMIT`), as SQLite's `isolation_level=None`: a call outside `transaction()` is its
own transaction, so a read-only reader sees what the writer committed since.

What differs from SQLite:
- PostgreSQL has no database-wide write lock: `try_begin` is a plain `BEGIN` and always True,
  and concurrent writers are kept apart by the unique indexes (row locks come later).
  `lock_timeout` is the timeout, where SQLite has `busy_timeout`.
- A failed statement aborts the whole transaction until it is rolled back (or rolled back to a
  savepoint); SQLite carries on. So no statement here relies on an error it then ignores.
- `COMMIT` of an aborted transaction is a silent rollback in PostgreSQL: `commit` checks first.
- Identity values taken by a rolled-back or conflicting insert are not reused: `seq` and effect
  ids have gaps. They increase in the order the inserts ran, which two concurrent writers may
  commit in the other order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self

import psycopg
from psycopg.pq import TransactionStatus

from store.errors import StoreError
from store.postgres.schema import MIGRATIONS
from store.urls import redact_url, scrub

# Serializes writers migrating one database at once (any constant, unique to this program).
MIGRATION_LOCK = 0x636F646174  # "codat"

Connection = psycopg.Connection[tuple[Any, ...]]


class Connected:
    """What every part of the PostgreSQL store shares: the connection and its transactions."""

    def __init__(self, conn: Connection, url: str, *, readonly: bool, timeout: float) -> None:
        self.conn = conn
        self.url = url
        self.timeout = timeout
        self.readonly = readonly
        self._savepoints = 0

    @classmethod
    def open(cls, url: str, *, readonly: bool = False, timeout: float = 5.0) -> Self:
        """Connect to the database at `url`; writers migrate it, readers never write."""
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout)))
        except psycopg.Error as error:
            # `from None`: the driver's own message may echo the URL, password and all.
            raise StoreError(
                f"cannot open database {redact_url(url)!r}: {_said(error, url)}"
            ) from None
        store = cls(conn, url, readonly=readonly, timeout=timeout)
        try:
            store._configure()
            if not readonly:
                store.migrate()
                # Fail now, not at the first webhook, if the database cannot be written.
                with store.transaction():
                    store.heartbeat(datetime.now(UTC).isoformat())
            return store
        except psycopg.Error as error:
            conn.close()
            raise StoreError(
                f"cannot use database {redact_url(url)!r}: {_said(error, url)}"
            ) from None

    def _configure(self) -> None:
        self.conn.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        if self.readonly:
            self.conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

    def close(self) -> None:
        self.conn.close()

    @property
    def in_transaction(self) -> bool:
        """In a transaction, failed or not (a broken connection is in none: nothing to undo)."""
        status = self.conn.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @contextmanager
    def transaction(self) -> Iterator[Self]:
        """One write transaction; nested calls join the outer one."""
        if self.in_transaction:
            yield self
            return
        self.begin()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def try_begin(self) -> bool:
        """A plain BEGIN, always True: PostgreSQL has no database-wide write lock to wait for."""
        self.begin()
        return True

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def commit(self) -> None:
        """COMMIT: durable when it returns (synchronous_commit); rolled back if it fails."""
        if self.conn.info.transaction_status == TransactionStatus.INERROR:
            self.rollback()
            raise StoreError("the transaction failed earlier and was rolled back, not committed")
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        if self.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextmanager
    def savepoint(self) -> Iterator[Self]:
        """A nested unit inside a transaction: undone alone if it fails.

        Outside a transaction it is one (SQLite's SAVEPOINT then starts one too)."""
        if not self.in_transaction:
            with self.transaction():
                yield self
            return
        self._savepoints += 1
        name = f"unit_{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            if self.in_transaction:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def migrate(self) -> int:
        """Apply the migrations not yet applied, in one transaction; returns the schema version."""
        with self.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations")}
            for version, script in MIGRATIONS:
                if version in done:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", [version])
        return max(version for version, _ in MIGRATIONS)

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    def heartbeat(self, now: str) -> None:
        """A one-row write: proves the store can still commit (not read-only, not full)."""
        self.conn.execute(
            "INSERT INTO heartbeat (id, at) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            [now],
        )

    def ping(self) -> None:
        """Raise StoreError unless the store answers a query."""
        try:
            self.conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
        except psycopg.Error as error:
            raise StoreError(_said(error, self.url)) from None


def _said(error: psycopg.Error, url: str) -> str:
    """The driver's message on one line, without the URL's secrets."""
    return " ".join(scrub(str(error), url).split())

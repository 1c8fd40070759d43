"""One PostgreSQL connection: opening, transactions, migrations, health.

Synchronous psycopg 3, because the store's contract is synchronous and shared with SQLite: the
processor runs each PostgreSQL transaction in a thread of its own (`remote` says so), where the
driver releases the GIL while it waits for the server. The connection is in autocommit mode and
transactions are explicit (`BEGIN`/`COMMIT`), as SQLite's `isolation_level=None`: a call outside
`transaction()` is its own transaction, so a read-only reader sees what the writer committed.

A lost connection (the server restarted, the network broke) is opened again by the next call
that starts outside a transaction; inside one, the transaction is gone with the connection and
every call fails with StoreError until it is rolled back. Session locks (the claims on effects,
see `effects.py`) are released by the server with the connection.

What differs from SQLite:
- PostgreSQL has no database-wide write lock: `try_begin` is a plain `BEGIN` and always True.
  Concurrent writers, in one process or several, are kept apart by the unique indexes, row
  locks, and advisory locks: one per company for folds (`lock_company`), one per effect for
  claims, one per named task (`lock_task`). `lock_timeout` is the timeout, where SQLite has
  `busy_timeout`.
- A failed statement aborts the whole transaction until it is rolled back (or rolled back to a
  savepoint); SQLite carries on. So no statement here relies on an error it then ignores.
- `COMMIT` of an aborted transaction is a silent rollback in PostgreSQL: `commit` checks first.
- Identity values taken by a rolled-back or conflicting insert are not reused: `seq` and effect
  ids have gaps. They increase in the order the inserts ran, which two concurrent writers may
  commit in the other order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self

import psycopg
from psycopg.pq import TransactionStatus

from store.errors import StoreBehind, StoreError
from store.postgres.schema import LATEST_VERSION, MIGRATIONS
from store.urls import redact_url, scrub

log = logging.getLogger(__name__)

# Advisory lock namespaces (the first key of the two-key form; any constants unique to this
# program). Advisory locks are per database, so two databases on one server never collide.
MIGRATION_LOCK = 0x636F646174  # "codat": serializes writers migrating one database at once
COMPANY_LOCKS = 0x636F6401  # a company's fold: (COMPANY_LOCKS, hashtext(company_id))
EFFECT_LOCKS = 0x636F6402  # a claim on an effect: (EFFECT_LOCKS, effect id)
TASK_LOCKS = 0x636F6403  # a task run by one instance at a time: (TASK_LOCKS, hashtext(name))

Connection = psycopg.Connection[tuple[Any, ...]]


class Connected:
    """What every part of the PostgreSQL store shares: the connection and its transactions."""

    remote = True

    def __init__(
        self, conn: Connection, url: str, *, readonly: bool, timeout: float, pooled: bool = False
    ) -> None:
        self._conn = conn
        self.url = url
        self.timeout = timeout
        self.readonly = readonly
        self._pooled = pooled  # a pool's connection: the pool replaces it when it breaks
        self._closed = False
        self._open = False  # BEGIN sent and neither COMMIT nor ROLLBACK since
        self._savepoints = 0
        # Effects whose claim lock (a session lock) the open transaction took: a rollback
        # undoes their rows' claims, and so releases their locks too.
        self._claims_taken: list[int] = []

    @classmethod
    def open(cls, url: str, *, readonly: bool = False, timeout: float = 5.0) -> Self:
        """Connect to the database at `url`; writers migrate it, readers never write."""
        store = cls(_connect(url, timeout, readonly), url, readonly=readonly, timeout=timeout)
        try:
            if readonly:
                version = store.schema_version()
                if version == 0:
                    raise StoreError(
                        f"database {redact_url(url)!r} has no codat-expenses tables yet; "
                        "expected a database `codat-expenses serve` has opened once"
                    )
                if version < LATEST_VERSION:
                    raise StoreBehind(repr(redact_url(url)), version, LATEST_VERSION)
            else:
                store.migrate()
                # Fail now, not at the first webhook, if the database cannot be written.
                with store.transaction():
                    store.heartbeat(datetime.now(UTC).isoformat())
                store._warn_if_not_durable()
            return store
        except psycopg.Error as error:
            store._conn.close()
            raise StoreError(
                f"cannot use database {redact_url(url)!r}: {_said(error, url)}"
            ) from None
        except StoreError:
            store._conn.close()
            raise

    def _warn_if_not_durable(self) -> None:
        row = self.conn.execute("SHOW synchronous_commit").fetchone()
        if row is not None and row[0] == "off":
            log.warning(
                "PostgreSQL's synchronous_commit is off for %s: a webhook acknowledged just "
                "before the server crashes can be lost; set it to on for this database",
                redact_url(self.url),
            )

    @property
    def conn(self) -> Connection:
        """The connection, opened again if it was lost while no transaction was open."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn.broken or self._conn.closed:
            if self._open:
                raise StoreError(
                    "the connection to the database was lost in the middle of a transaction; "
                    "the server rolled it back"
                )
            if self._pooled:
                raise StoreError("the connection to the database was lost")
            self._conn = _connect(self.url, self.timeout, self.readonly)
        return self._conn

    def close(self) -> None:
        self._closed = True
        if not self._pooled:
            self._conn.close()

    @property
    def in_transaction(self) -> bool:
        """In a transaction, failed or not (a broken connection is in none: nothing to undo)."""
        status = self._conn.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @contextmanager
    def transaction(self) -> Iterator[Self]:
        """One write transaction; nested calls join the outer one."""
        if self._open:
            yield self
            return
        self.begin()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @contextmanager
    def read_snapshot(self) -> Iterator[Self]:
        """A repeatable-read transaction: every read in it sees the same snapshot."""
        if self._open:
            yield self
            return
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self._open = True
        try:
            yield self
        finally:
            self.rollback()

    def try_begin(self) -> bool:
        """A plain BEGIN, always True: PostgreSQL has no database-wide write lock to wait for."""
        self.begin()
        return True

    def begin(self) -> None:
        """BEGIN; on a connection found lost only now, once more on a new one (nothing of the
        transaction has run yet, so nothing can be lost or done twice)."""
        try:
            self.conn.execute("BEGIN")
        except psycopg.OperationalError:
            if not self._conn.broken or self._pooled:
                raise
            self.conn.execute("BEGIN")
        self._open = True

    def commit(self) -> None:
        """COMMIT: durable when it returns (synchronous_commit); rolled back if it fails."""
        conn = self.conn
        if conn.info.transaction_status == TransactionStatus.INERROR:
            self.rollback()
            raise StoreError("the transaction failed earlier and was rolled back, not committed")
        try:
            conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._open = False
        self._claims_taken.clear()

    def rollback(self) -> None:
        self._open = False
        taken, self._claims_taken = self._claims_taken, []
        if self._conn.broken or self._conn.closed:
            return  # the server ended the session, and its locks with it
        if self.in_transaction:
            self._conn.execute("ROLLBACK")
        for effect_id in taken:
            self._unlock(EFFECT_LOCKS, "%s::int", effect_id)

    @contextmanager
    def savepoint(self) -> Iterator[Self]:
        """A nested unit inside a transaction: undone alone if it fails.

        Outside a transaction it is one (SQLite's SAVEPOINT then starts one too)."""
        if not self._open:
            with self.transaction():
                yield self
            return
        self._savepoints += 1
        name = f"unit_{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            if not self._conn.broken and self.in_transaction:
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def lock_company(self, company_id: str, *, wait: bool = False) -> bool:
        """Take the company's fold lock until the transaction ends; False if another holds it.

        With `wait`, wait for it up to the lock timeout (a replay behind a running fold)."""
        if wait:
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [COMPANY_LOCKS, company_id]
            )
            return True
        row = self.conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", [COMPANY_LOCKS, company_id]
        ).fetchone()
        return bool(row and row[0])

    def lock_companies(self, company_ids: Sequence[str]) -> list[str]:
        """`lock_company` for several at once (one round trip): those this transaction got."""
        found = self.conn.execute(
            "SELECT id FROM unnest(%s::text[]) WITH ORDINALITY AS wanted (id, n) "
            "WHERE pg_try_advisory_xact_lock(%s, hashtext(id)) ORDER BY n",
            [list(company_ids), COMPANY_LOCKS],
        )
        return [row[0] for row in found]

    def lock_task(self, name: str) -> bool:
        """Take the task's lock for this connection's life, unless another instance holds it."""
        row = self.conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", [TASK_LOCKS, name]
        ).fetchone()
        return bool(row and row[0])

    def unlock_task(self, name: str) -> None:
        self._unlock(TASK_LOCKS, "hashtext(%s)", name)

    def _unlock(self, namespace: int, key_sql: str, key: Any) -> None:
        """Release a session lock this connection holds (once); nothing if it holds none."""
        self.conn.execute(
            f"SELECT pg_advisory_unlock(%s, {key_sql}) FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
            f"AND classid = %s::oid AND objid = ({key_sql})::oid AND objsubid = 2",
            [namespace, key, namespace, key],
        ).fetchall()

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
                # A function body ($$ ... $$) holds semicolons: such a script is sent whole.
                for statement in [script] if "$$" in script else script.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", [version])
        return max(version for version, _ in MIGRATIONS)

    def schema_version(self) -> int:
        """The last migration applied; 0 for a database without the tables."""
        if self.conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return 0
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


def _connect(url: str, timeout: float, readonly: bool) -> Connection:
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout)))
        configure(conn, timeout=timeout, readonly=readonly)
    except psycopg.Error as error:
        # `from None`: the driver's own message may echo the URL, password and all.
        raise StoreError(
            f"cannot open database {redact_url(url)!r}: {_said(error, url)}",
            transient=isinstance(error, psycopg.OperationalError),
        ) from None
    return conn


def configure(conn: Connection, *, timeout: float, readonly: bool) -> None:
    """A new connection's session settings: the lock timeout, and read-only for readers."""
    conn.execute(f"SET lock_timeout = {int(timeout * 1000)}")
    if readonly:
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")


def _said(error: psycopg.Error, url: str) -> str:
    """The driver's message on one line, without the URL's secrets."""
    return " ".join(scrub(str(error), url).split())

"""One SQLite connection: opening (WAL, synchronous=FULL), transactions, migrations, health.

One writable connection per process (the processor funnels every write through one writer);
any number of read-only connections for queries. WAL with synchronous=FULL: a commit is on disk
before it returns, so nothing is acknowledged that a crash could lose.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from store.errors import StoreBehind, StoreError
from store.sqlite.schema import LATEST_VERSION, MIGRATIONS


class Connected:
    """What every part of the SQLite store shares: the connection and its transactions."""

    remote = False

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, readonly: bool, timeout: float = 5.0
    ) -> None:
        self.conn = conn
        self.timeout = timeout
        self.path = path
        self.readonly = readonly
        self._savepoints = 0

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False, timeout: float = 5.0) -> Self:
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
            store = cls(conn, path, readonly=readonly, timeout=timeout)
            if readonly and (version := store.schema_version()) < LATEST_VERSION:
                conn.close()
                raise StoreBehind(repr(str(path)), version, LATEST_VERSION)
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

    @property
    def in_transaction(self) -> bool:
        """In a transaction (SQLite ends one itself on some errors: I/O, disk full)."""
        return self.conn.in_transaction

    @contextmanager
    def transaction(self) -> Iterator[Self]:
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
    def read_snapshot(self) -> Iterator[Self]:
        """A deferred transaction: its first read fixes the snapshot (WAL) the others see."""
        if self.conn.in_transaction:
            yield self
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def try_begin(self) -> bool:
        """BEGIN IMMEDIATE if the write lock is free now; False, and no transaction, if not."""
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            return False
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def begin(self) -> None:
        """BEGIN IMMEDIATE, waiting up to the busy timeout for the write lock (blocking)."""
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """COMMIT: on disk when it returns (blocking: the fsync)."""
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextmanager
    def savepoint(self) -> Iterator[Self]:
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

    def lock_company(self, company_id: str, *, wait: bool = False) -> bool:
        """True: a write transaction (BEGIN IMMEDIATE) already excludes every other writer."""
        return True

    def lock_companies(self, company_ids: Sequence[str]) -> list[str]:
        """All of them (see `lock_company`)."""
        return list(company_ids)

    def lock_task(self, name: str) -> bool:
        """True: SQLite serves one machine, where one `serve` runs the task (see the README)."""
        return True

    def unlock_task(self, name: str) -> None:
        """Nothing to release (see `lock_task`)."""

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
                for statement in _statements(script):
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


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration: split at each `;` that ends one (not inside a trigger)."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                yield statement
            statement = ""


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

"""What only the SQLite backend has: files, WAL, the `schema_migrations` table and its
migrations, and columns the contract does not expose. The contract itself is tested, for every
backend, in tests/store/test_store.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from store import StoreError
from store.sqlite import SqliteStore
from store.sqlite.schema import MIGRATIONS
from tests.store.samples import COMPANY, T0, T1, new_event
from tests.support import open_sqlite


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "processor.db"


def count_rows(store: SqliteStore, table: str) -> int:
    return int(store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_migrations_are_idempotent_and_keep_the_data(path: Path) -> None:
    first = open_sqlite(path)
    latest = max(version for version, _ in MIGRATIONS)
    assert first.schema_version() == latest
    with first.transaction():
        first.append_events([new_event("msg-1")])
    first.close()

    second = open_sqlite(path)
    try:
        assert second.schema_version() == latest
        assert second.migrate() == latest
        assert second.migrate() == latest
        versions = [row[0] for row in second.conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [version for version, _ in MIGRATIONS]
        assert count_rows(second, "events") == 1
        assert second.count_events(pending=True) == 1
        second.ping()
    finally:
        second.close()


def test_schema_has_the_declared_tables(path: Path) -> None:
    store = open_sqlite(path)
    try:
        tables = {
            row[0]
            for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {"events", "companies", "effects", "schema_migrations"} <= tables
        assert store.schema_version() == max(version for version, _ in MIGRATIONS)
        assert store.schema_version() >= 1
        journal = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert journal.lower() == "wal"
    finally:
        store.close()


def test_an_older_database_is_migrated_forward_once(path: Path) -> None:
    # A database written by the first release: only migration 1 applied, one event stored.
    first_version, first_script = MIGRATIONS[0]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for statement in first_script.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", [first_version])
    conn.execute(
        "INSERT INTO events (message_id, event_type, body_format, source, generated_date, "
        "received_at, fields, body, headers, last_delivered_at) "
        "VALUES ('msg-old', 'company.created', 'current', 'webhook', ?, ?, '{}', X'7B7D', '{}', ?)",
        [T0, T0, T0],
    )
    conn.close()
    for _ in range(2):
        reopened = open_sqlite(path)
        try:
            assert reopened.schema_version() == max(version for version, _ in MIGRATIONS)
            versions = [
                row[0] for row in reopened.conn.execute("SELECT version FROM schema_migrations")
            ]
            assert versions == [version for version, _ in MIGRATIONS]
            assert count_rows(reopened, "events") == 1
        finally:
            reopened.close()


def test_open_fails_clearly_for_a_path_that_cannot_be_a_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open database"):
        open_sqlite(tmp_path / "missing-directory" / "processor.db")


def test_readonly_open_of_a_missing_file_fails_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="does not exist"):
        open_sqlite(missing, readonly=True)
    assert not missing.exists()


def test_a_redelivery_is_one_row_stamped_with_its_time_in_last_delivered_at(path: Path) -> None:
    """The contract shows a duplicate's count of deliveries; the row also keeps the last one's
    time, which only SQLite's own columns show."""
    store = open_sqlite(path)
    try:
        with store.transaction():
            [first] = store.append_events([new_event("msg-1", received_at=T0)])
            store.append_events([new_event("msg-1", received_at=T1)])
        assert count_rows(store, "events") == 1
        received, last = store.conn.execute(
            "SELECT received_at, last_delivered_at FROM events WHERE seq = ?", [first.seq]
        ).fetchone()
        assert (received, last) == (T0, T1)
        assert [e.seq for e in store.pending_events(COMPANY)] == [first.seq]
    finally:
        store.close()


def test_a_reader_refuses_a_store_an_older_version_left_behind(tmp_path: Path) -> None:
    """Only writers migrate: a reader of an older schema would find columns missing (a
    `status` before `serve` of the new version ran once); it says so, and what to do."""
    path = tmp_path / "processor.db"
    SqliteStore.open(path).close()
    latest = max(version for version, _ in MIGRATIONS)
    with sqlite3.connect(path) as conn:
        # As version 8 left it: the last migration (a column of effects) not applied.
        conn.execute("ALTER TABLE effects DROP COLUMN requeued_at")
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", [latest])
    conn.close()
    with pytest.raises(StoreError) as refused:
        SqliteStore.open(path, readonly=True)
    assert str(refused.value) == (
        f"database {str(path)!r} is at schema version {latest - 1}; this codat-expenses reads "
        f"version {latest}: start `codat-expenses serve` of this version once (it migrates the "
        "database), then try again"
    )
    SqliteStore.open(path).close()  # a writer migrates it
    SqliteStore.open(path, readonly=True).close()

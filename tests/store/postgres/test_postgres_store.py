"""What only the PostgreSQL backend has: its migrations, a server-side read-only session,
passwords in URLs, aborted transactions, collations. The contract itself is tested, for every
backend, in tests/store/test_store.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from store import Store, StoreError, open_store
from store.postgres import PostgresStore
from store.postgres.schema import MIGRATIONS
from tests.pg_server import PostgresServer
from tests.store.samples import COMPANY, T0, new_event

LATEST = max(version for version, _ in MIGRATIONS)
PASSWORD = "s3cret-Pa55word"


def open_postgres(url: str, *, readonly: bool = False) -> PostgresStore:
    store = open_store(url, readonly=readonly)
    assert isinstance(store, PostgresStore), store
    return store


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    opened = open_postgres(postgres_url)
    yield opened
    opened.close()


def migrations_applied(store: PostgresStore) -> list[int]:
    return [row[0] for row in store.conn.execute("SELECT version FROM schema_migrations")]


# -- migrations -----------------------------------------------------------------------------------


def test_migrations_are_applied_once_and_keep_the_data(postgres_url: str) -> None:
    first = open_postgres(postgres_url)
    assert first.schema_version() == LATEST
    with first.transaction():
        first.append_events([new_event("msg-1")])
    first.close()
    second = open_postgres(postgres_url)
    try:
        assert second.migrate() == LATEST
        assert migrations_applied(second) == [version for version, _ in MIGRATIONS]
        assert second.count_events() == 1
    finally:
        second.close()


def test_writers_opening_at_once_migrate_once(postgres_url: str) -> None:
    opened: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(open_store(postgres_url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert errors == []
        assert len(opened) == 4
        first = opened[0]
        assert isinstance(first, PostgresStore)
        assert migrations_applied(first) == [version for version, _ in MIGRATIONS]
    finally:
        for store in opened:
            store.close()


def test_a_reader_never_creates_the_schema(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="has no codat-expenses tables yet; expected a database"):
        open_postgres(postgres_url, readonly=True)
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)


# -- read-only ------------------------------------------------------------------------------------


def test_a_readonly_store_is_refused_writes_by_the_server(
    store: PostgresStore, postgres_url: str
) -> None:
    reader = open_postgres(postgres_url, readonly=True)
    try:
        reader.ping()
        # Even inside its own transaction, and even through plain SQL.
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), reader.transaction():
            reader.conn.execute("DELETE FROM heartbeat")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.migrate()
        assert not reader.in_transaction
    finally:
        reader.close()
    store.ping()


# -- passwords never shown ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{PASSWORD}@127.0.0.1:1/processor",
        f"postgres://app:{PASSWORD}@127.0.0.1:1/processor?sslmode=disable",
        f"postgresql://app@127.0.0.1:1/processor?password={PASSWORD}",
        f"postgresql://app:{PASSWORD}@127.0.0.1:notaport/processor",
        f"postgresql://app:{PASSWORD}@127.0.0.1:1/processor?nosuchoption=1",
    ],
    ids=["unreachable", "postgres-scheme", "password-parameter", "bad-port", "bad-option"],
)
def test_a_store_error_never_shows_the_password(url: str) -> None:
    with pytest.raises(StoreError) as raised:
        open_store(url, timeout=1)
    message = str(raised.value)
    assert PASSWORD not in message
    assert "127.0.0.1" in message, message
    assert "\n" not in message
    assert raised.value.__cause__ is None or PASSWORD not in str(raised.value.__cause__)


def test_a_missing_database_is_named_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{postgres_server.port}/no_such_database"
    with pytest.raises(StoreError) as raised:
        open_store(url)
    message = str(raised.value)
    assert PASSWORD not in message
    assert "postgresql://postgres:***@127.0.0.1" in message
    assert "no_such_database" in message


# -- transactions ---------------------------------------------------------------------------------


def test_commit_of_a_failed_transaction_raises_and_keeps_nothing(store: PostgresStore) -> None:
    # PostgreSQL answers COMMIT of an aborted transaction with a silent ROLLBACK.
    store.begin()
    store.append_events([new_event("msg-1")])
    with pytest.raises(psycopg.errors.UndefinedTable):
        store.conn.execute("SELECT * FROM no_such_table")
    with pytest.raises(StoreError, match="rolled back"):
        store.commit()
    assert not store.in_transaction
    assert store.count_events() == 0


def test_try_begin_takes_no_lock_so_two_writers_both_begin(
    store: PostgresStore, postgres_url: str
) -> None:
    other = open_postgres(postgres_url)
    try:
        assert store.try_begin()
        assert other.try_begin()
        store.append_events([new_event("msg-1", event_id="evt-1")])
        other.append_events([new_event("msg-2", event_id="evt-2")])
        store.commit()
        other.commit()
        assert store.count_events() == 2
    finally:
        other.close()


# -- text order -----------------------------------------------------------------------------------


def test_ids_and_dates_compare_byte_wise_whatever_the_database_locale(
    postgres_server: PostgresServer,
) -> None:
    # An ICU en-US database would put "a" before "B" and ignore punctuation; SQLite would not.
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    ids = ["company-a", "Company-B", "company_c", "company-D", "COMPANY-e"]
    with postgres_server.fresh_database(icu) as url:
        store = open_postgres(url)
        try:
            with store.transaction():
                for company_id in ids:
                    store.save_company(company_id, "created", {"company_id": company_id}, T0)
            page = store.companies(state=None, limit=2, after=None)
            assert [row.company_id for row in page.companies] == sorted(ids)[:2]
            assert page.next_after is not None
            rest = store.companies(state=None, limit=10, after=page.next_after)
            assert [row.company_id for row in rest.companies] == sorted(ids)[2:]
        finally:
            store.close()


def test_json_keeps_its_key_order_and_escaped_nuls(store: PostgresStore) -> None:
    # TEXT, not JSONB: JSONB would sort the keys and refuse \\u0000, which SQLite keeps.
    fields = {"b": 1, "a": {"z": None, "y": [1.5, "\u0000", "é"]}}
    with store.transaction():
        store.save_company(COMPANY, "linked", fields, T0)
    row = store.company(COMPANY)
    assert row is not None
    assert row.data == fields
    assert list(row.data) == ["b", "a"]


def test_a_lost_connection_is_reported_not_hidden_by_the_rollback(
    store: PostgresStore, postgres_url: str
) -> None:
    pid = store.conn.info.backend_pid
    with pytest.raises(psycopg.OperationalError), store.transaction():
        store.append_events([new_event("msg-1")])
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        store.append_events([new_event("msg-2", event_id="evt-2")])
    assert not store.in_transaction
    # The next call outside a transaction opens a new connection: nothing of the lost
    # transaction was committed, and the store goes on.
    store.ping()
    assert store.conn.info.backend_pid != pid
    assert store.count_events() == 0
    with store.transaction():
        store.append_events([new_event("msg-3", event_id="evt-3")])
    assert store.count_events() == 1


def test_a_lost_connection_fails_the_rest_of_its_transaction(
    store: PostgresStore, postgres_url: str
) -> None:
    pid = store.conn.info.backend_pid
    with store.transaction():
        store.append_events([new_event("msg-1")])
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError):
            store.append_events([new_event("msg-2", event_id="evt-2")])
        # Not on a new connection, outside any transaction: that would commit it alone.
        with pytest.raises(StoreError, match="lost in the middle of a transaction"):
            store.append_events([new_event("msg-3", event_id="evt-3")])
        store.rollback()
    assert store.count_events() == 0


def test_a_database_with_synchronous_commit_off_is_warned_about(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    with caplog.at_level("WARNING", logger="store.postgres.connected"):
        open_postgres(postgres_url).close()
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "synchronous_commit is off" in warning and "can be lost" in warning, warning
    caplog.clear()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    with caplog.at_level("WARNING", logger="store.postgres.connected"):
        open_postgres(postgres_url).close()
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


def test_a_reader_refuses_a_database_an_older_version_left_behind(postgres_url: str) -> None:
    """Only writers migrate: a reader of an older schema says so, and what to do."""
    writer = PostgresStore.open(postgres_url)
    try:
        with writer.transaction():
            # As version 8 left it: the last migration (a column of effects) not applied.
            writer.conn.execute("ALTER TABLE effects DROP COLUMN requeued_at")
            writer.conn.execute("DELETE FROM schema_migrations WHERE version = %s", [LATEST])
    finally:
        writer.close()
    behind = f"is at schema version {LATEST - 1}; this codat-expenses reads version {LATEST}"
    with pytest.raises(StoreError, match=behind) as refused:
        PostgresStore.open(postgres_url, readonly=True)
    assert "start `codat-expenses serve` of this version once" in str(refused.value)
    PostgresStore.open(postgres_url).close()  # a writer migrates it
    PostgresStore.open(postgres_url, readonly=True).close()

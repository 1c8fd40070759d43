"""`codat-expenses store copy` and `store check`: moving a deployment from SQLite to PostgreSQL.

The source is a SQLite store written by the real `serve` (in a thread), driven by the stand-in
for Codat: companies in ready, pending_auth and disconnected, and one whose partner expense
connection Codat refused (a failed effect); `serve` is stopped before anything is copied. The
target is a fresh database on the throwaway PostgreSQL server, reached with a password in its
URL (the server trusts loopback, so any password works, and none may ever be printed). Every
command is a real `python -m processor` subprocess.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from processor import clock
from processor.cli.store import check_copy
from processor.sandbox import SandboxServer
from processor.sandbox.sender import generate_secret
from processor.sandbox.webhook_bodies import company_event, new_company
from store import CodatCall, RateLimitPause, open_store
from store.copying import COLUMNS, KEYS, NOT_COPIED, TABLES, copyable
from tests.cli_support import Result
from tests.conftest import Codat
from tests.support import API_KEY, ServeProcess, ServeThread, free_port, post_webhook, wait_for

PASSWORD = "s3cret-Pa55word"
PARTNER_EXPENSE = "/companies/*/sync/expenses/connections/partnerExpense"


@dataclass
class Source:
    """The SQLite store `serve` wrote, the stand-in it talked to, and what `serve` showed."""

    path: Path
    codat: Codat
    secret: str
    companies: dict[str, str]  # what each company went through -> its id
    documents: dict[str, dict[str, Any]]  # company id -> GET /companies/{id} before the copy

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    folder = tmp_path_factory.mktemp("source")
    secret, port = generate_secret(), free_port()
    with SandboxServer(
        api_key=API_KEY,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/codat",
        secrets=[secret],
        retry_delays=(0, 0.2, 0.5, 1, 2, 3),
    ) as server:
        codat = Codat(server)
        env = {
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
        }
        serve = ServeThread(folder / "processor.db", env, port=port)
        with serve:
            companies = _onboard(codat, serve)
            documents = {cid: serve.company(cid) for cid in companies.values()}
        assert all(documents.values()), documents
        yield Source(
            folder / "processor.db",
            codat,
            secret,
            companies,
            {k: v for k, v in documents.items() if v is not None},
        )
        codat.close()


def _onboard(codat: Codat, serve: ServeThread) -> dict[str, str]:
    """Four companies, one in each situation a deployment holds."""
    # Codat refuses the first partner expense connection: that company's command fails.
    codat.faults([{"method": "POST", "path": PARTNER_EXPENSE, "status": 400, "times": 1}])
    failed = _linked(codat, serve, "Refused Ltd")
    wait_for(lambda: (serve.company(failed["id"]) or {}).get("failed"), what="a failed command")
    ready = _linked(codat, serve, "Ready plc")
    serve.wait_state(ready["id"], "ready")
    gone = _linked(codat, serve, "Unlinked Co")
    serve.wait_state(gone["id"], "ready")
    codat.http.patch(
        f"/companies/{gone['id']}/connections/{gone['connection']}", json={"status": "Unlinked"}
    ).raise_for_status()
    serve.wait_state(gone["id"], "disconnected")
    waiting = codat.create_company("Waiting GmbH")
    codat.create_connection(waiting["id"])
    serve.wait_state(waiting["id"], "pending_auth")
    return {
        "failed": failed["id"],
        "ready": ready["id"],
        "disconnected": gone["id"],
        "pending_auth": waiting["id"],
    }


def _linked(codat: Codat, serve: ServeThread, name: str) -> dict[str, str]:
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"])
    serve.wait_state(company["id"], "pending_auth")
    codat.authorize(company["id"], connection["id"])
    return {"id": company["id"], "connection": connection["id"]}


@pytest.fixture
def target(postgres_url: str) -> str:
    """The fresh PostgreSQL database's URL, with a password."""
    return postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def store_cli(*args: str) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "processor", "store", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = Result(["store", *args], done.returncode, done.stdout, done.stderr)
    assert PASSWORD not in result.output, result.describe()
    return result


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return {
            table: conn.execute(
                f"SELECT {', '.join(COLUMNS[table])} FROM {table} ORDER BY {KEYS[table]}"
            ).fetchall()
            for table in TABLES
        }


def postgres_rows(url: str, tables: tuple[str, ...] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                f"SELECT {', '.join(COLUMNS[table])} FROM {table} ORDER BY {KEYS[table]}"
            ).fetchall()
            for table in tables
        }


def claims_cleared(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows as a copy holds them: the effects without their claims."""
    cleared = [COLUMNS["effects"].index(c) for c in ("claimed_by", "claim_expires_at")]
    return {
        **rows,
        "effects": [
            tuple(None if i in cleared else v for i, v in enumerate(row)) for row in rows["effects"]
        ],
    }


def test_copy_to_postgresql_keeps_every_row_and_serve_carries_on(
    source: Source, target: str, tmp_path: Path
) -> None:
    # A copy of the source where a worker that died still holds a claim on one effect.
    old = tmp_path / "old.db"
    with closing(sqlite3.connect(source.path)) as original, closing(sqlite3.connect(old)) as conn:
        original.backup(conn)
        conn.execute(
            "UPDATE effects SET claimed_by = 'worker:dead:1', claim_expires_at = '2999-01-01' "
            "WHERE id = (SELECT MIN(id) FROM effects)"
        )
        # And one company's configuration choices, as `codat-expenses options` stores them.
        conn.execute(
            "INSERT INTO expense_options (company_id, fetched_at, data) "
            "SELECT MIN(company_id), '2026-12-01T10:00:00.000Z', ? FROM companies",
            ['{"accounts":[{"id":"1","name":"Bank"}],"suppliers":[],"customers":[]}'],
        )
        # And one expense sync, as the fold records it.
        conn.execute(
            "INSERT INTO expense_syncs (key, company_id, sync_id, at, outcome, data, updated_at) "
            "SELECT MIN(company_id) || '/s-1', MIN(company_id), 's-1', "
            "'2026-12-01T10:00:00.000Z', 'failed', ?, '2026-12-01T10:00:00.000Z' FROM companies",
            ['{"sync_id":"s-1","outcome":"failed"}'],
        )
        conn.commit()
    # And what reconciliation and Codat's rate limit leave: when one company's syncs were last
    # read, and a pause a 429 began (no notice in the log says so: only the copied row can).
    pause = RateLimitPause(
        clock.after(3600), clock.now(), "Codat answered 429 to a sync look-up (Retry-After 3600 s)"
    )
    checked = min(source.companies.values())
    store = open_store(f"sqlite:///{old}")
    try:
        with store.transaction():
            store.mark_sync_checked(checked, "2026-12-01T11:00:00.0000000Z")
            store.save_rate_limit_pause(pause, clock.now())
            # And a call to Codat about a company, as serve records them for its timeline.
            store.record_codat_calls(
                [CodatCall(checked, clock.now(), "GET /companies/{id}", "200", 2.5)]
            )
        states = store.state_counts()
    finally:
        store.close()
    before = sqlite_rows(old)
    assert any(row[COLUMNS["effects"].index("claimed_by")] for row in before["effects"])
    assert {len(before[t]) > 0 for t in TABLES} == {True}
    with closing(sqlite3.connect(old)) as conn:
        statuses = {row[0] for row in conn.execute("SELECT status FROM effects")}
    assert {"done", "failed"} <= statuses, statuses

    result = store_cli("copy", "--from", f"sqlite:///{old}", "--to", target, "--json")
    assert result.returncode == 0, result.describe()
    summary = result.json()
    assert summary["copied"] == {t: len(before[t]) for t in TABLES}
    assert summary["check"]["ok"] is True
    assert summary["check"]["companies"] == len(source.companies)
    assert summary["check"]["different"] == []
    assert summary["to"] == target.replace(PASSWORD, "***")

    # Every column of every row, the raw body bytes and headers included; claims cleared.
    copied = postgres_rows(target)
    assert copied == claims_cleared(before)
    assert sqlite_rows(old) == before  # the source is only read
    body = COLUMNS["events"].index("body")
    assert all(isinstance(row[body], bytes) and row[body] for row in copied["events"])
    # No column of the schema is left out of the copy.
    with psycopg.connect(target) as conn:
        for table in TABLES:
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                [table],
            ).fetchall()
            assert {c[0] for c in columns} == set(COLUMNS[table])

    # And back, PostgreSQL to SQLite: the same rows again.
    back = tmp_path / "back.db"
    result = store_cli("copy", "--from", target, "--to", f"sqlite:///{back}", "--quiet")
    assert result.returncode == 0, result.describe()
    assert sqlite_rows(back) == copied
    # Companies by state, counted by each target's own triggers as its companies were inserted.
    for url in (target, f"sqlite:///{back}"):
        moved_store = open_store(url, readonly=True)
        try:
            assert moved_store.state_counts() == states, url
            # Read as the processes read them, whatever TABLES says.
            assert moved_store.sync_checks([checked]) == {checked: "2026-12-01T11:00:00.0000000Z"}
            assert moved_store.rate_limit_pause() == pause
        finally:
            moved_store.close()

    # serve on the copy shows the same documents and takes new webhooks after the copied seqs.
    env = {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": source.codat.url,
        "CODAT_WEBHOOK_SECRET": source.secret,
        "RECONCILE_INTERVAL_SECONDS": "0",
    }
    with ServeProcess(tmp_path / "moved.db", env, database_url=target) as moved:
        for company_id, document in source.documents.items():
            found = moved.company(company_id)
            assert found is not None
            # The calls to Codat: those the source's serve had written when it answered, then
            # any it wrote in its last second (its calls are flushed about once a second).
            calls, expected = found.pop("codatCalls"), document["codatCalls"]
            assert calls[: len(expected)] == expected
            assert found == {k: v for k, v in document.items() if k != "codatCalls"}
        message_id = f"msg_{uuid.uuid4().hex}"
        body_json = company_event("company.created", new_company("After The Move"))
        answer = post_webhook(moved.url, body_json, source.secret, message_id=message_id)
        assert answer.status_code == 200, answer.text
        store = moved.open_store()
        try:
            (event,) = store.find_events(event_or_message_id=message_id)
        finally:
            store.close()
        assert event.seq > max(row[0] for row in before["events"])
        # The pause moved with the store: every instance on the copy still holds back.
        wait_for(
            lambda: pause.reason in (httpx.get(f"{moved.url}/healthz").json().get("reason") or ""),
            what="the copied rate-limit pause in /healthz",
        )
        assert moved.logs().count(PASSWORD) == 0
    # A new effect also continues after the copied ids.
    with psycopg.connect(target) as conn:
        row = conn.execute("SELECT nextval(pg_get_serial_sequence('effects', 'id'))").fetchone()
        assert row is not None and row[0] > max(r[0] for r in before["effects"])


def test_a_non_empty_target_is_refused_with_nothing_written(source: Source, target: str) -> None:
    first = store_cli("copy", "--from", source.url, "--to", target)
    assert first.returncode == 0, first.describe()
    # Not a terminal: no progress bar, only what was copied and what the check found.
    assert first.stderr == ""
    lines = first.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["copied", "check:"], lines
    assert "PostgreSQL database" in lines[0] and "***" not in lines[0]
    every = (*TABLES, "heartbeat")
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE heartbeat SET at = 'before the second copy'")
    before = postgres_rows_any(target, every)

    result = store_cli("copy", "--from", source.url, "--to", target)
    assert result.returncode == 1, result.describe()
    counts = {t: len(before[t]) for t in TABLES}
    assert (
        f"holds {counts['events']} events, {counts['companies']} companies, "
        f"{counts['effects']} effects" in result.stderr
    ), result.describe()
    assert "not empty" in result.stderr and "nothing was written" in result.stderr
    assert postgres_rows_any(target, every) == before


def postgres_rows_any(url: str, tables: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}


def test_a_missing_source_exits_2_and_leaves_the_target_untouched(
    tmp_path: Path, target: str
) -> None:
    missing = tmp_path / "old.db"
    result = store_cli("copy", "--from", f"sqlite:///{missing}", "--to", target)
    assert result.returncode == 2, result.describe()
    assert str(missing) in result.stderr and "does not exist" in result.stderr
    assert not missing.exists()
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT to_regclass('events')").fetchone() == (None,)


def test_the_check_names_the_company_whose_state_differs_and_the_table_short_of_rows(
    source: Source, target: str
) -> None:
    assert store_cli("copy", "--from", source.url, "--to", target, "--quiet").returncode == 0
    assert store_cli("check", "--from", source.url, "--to", target).returncode == 0
    tampered = source.companies["ready"]
    with psycopg.connect(target) as conn:
        row = conn.execute("SELECT data FROM companies WHERE company_id = %s", [tampered])
        data = json.loads(row.fetchone()[0])  # type: ignore[index]
        data["name"] = "Tampered After The Copy"
        conn.execute(
            "UPDATE companies SET data = %s WHERE company_id = %s", [json.dumps(data), tampered]
        )
        conn.execute("DELETE FROM effects WHERE id = (SELECT MAX(id) FROM effects)")

    result = store_cli("check", "--from", source.url, "--to", target)
    assert result.returncode == 1, result.describe()
    assert f"company {tampered}: the state rebuilt" in result.stderr
    others = set(source.companies.values()) - {tampered}
    assert not any(company in result.output for company in others), result.describe()
    assert "check: effects:" in result.stderr
    as_json = store_cli("check", "--from", source.url, "--to", target, "--json")
    assert as_json.returncode == 1
    assert as_json.json()["check"]["different"] == [tampered]
    # The check rolled its rebuilds back: the tampered state is still there.
    with psycopg.connect(target) as conn:
        row = conn.execute("SELECT data FROM companies WHERE company_id = %s", [tampered])
        assert json.loads(row.fetchone()[0])["name"] == "Tampered After The Copy"  # type: ignore[index]


def test_check_copy_compares_rebuilt_state_with_the_copied_state(
    source: Source, tmp_path: Path
) -> None:
    """SQLite to SQLite, and the check as a function: equal, then one state changed."""
    copy_path = tmp_path / "copy.db"
    result = store_cli("copy", "--from", source.url, "--to", f"sqlite:///{copy_path}")
    assert result.returncode == 0, result.describe()
    assert sqlite_rows(copy_path) == claims_cleared(sqlite_rows(source.path))
    src = copyable(open_store(source.url, readonly=True))
    dst = copyable(open_store(f"sqlite:///{copy_path}"))
    try:
        assert check_copy(src, dst).ok
        changed = source.companies["disconnected"]
        row = dst.company(changed)
        assert row is not None
        with dst.transaction():
            dst.save_company(changed, row.state, {**row.data, "name": "Renamed"}, row.updated_at)
        found = check_copy(src, dst)
        assert found.different == [changed] and not found.count_mismatches
    finally:
        src.close()
        dst.close()


def test_every_table_of_the_schema_is_copied_or_named_as_left_out(
    tmp_path: Path, target: str
) -> None:
    """A table a migration adds fails this until `store copy` copies it (TABLES, with every
    column in COLUMNS) or NOT_COPIED says why not; on both backends."""
    for url in (f"sqlite:///{tmp_path / 'fresh.db'}", target):
        open_store(url).close()  # created and migrated
    with closing(sqlite3.connect(tmp_path / "fresh.db")) as conn:
        in_sqlite = {
            row[0]: {c[1] for c in conn.execute(f"PRAGMA table_info({row[0]})")}
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    with psycopg.connect(target) as conn:
        in_postgres: dict[str, set[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ):
            in_postgres.setdefault(table, set()).add(column)
    for backend, tables in (("SQLite", in_sqlite), ("PostgreSQL", in_postgres)):
        assert set(tables) == set(TABLES) | set(NOT_COPIED), (
            f"{backend}: expected the schema's tables to be those copied {sorted(TABLES)} and "
            f"those left out {sorted(NOT_COPIED)}, found {sorted(tables)}"
        )
        for table in TABLES:
            assert tables[table] == set(COLUMNS[table]), (backend, table)


def test_a_target_an_earlier_version_wrote_is_refused_and_not_migrated(
    source: Source, tmp_path: Path
) -> None:
    """A target at an older schema is not empty (an earlier `serve` opened it): refused as the
    reader finds it, not migrated by a writer to count its rows."""
    behind = tmp_path / "earlier.db"
    open_store(f"sqlite:///{behind}").close()
    with closing(sqlite3.connect(behind)) as conn, conn:
        # As version 8 left it: the last migration (a column of effects) not applied.
        conn.execute("ALTER TABLE effects DROP COLUMN requeued_at")
        latest = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", [latest])
    before = behind.read_bytes()

    result = store_cli("copy", "--from", source.url, "--to", f"sqlite:///{behind}")
    assert result.returncode == 1, result.describe()
    assert (
        f"is not empty: an earlier codat-expenses wrote it (schema version {latest - 1}); "
        "store copy only copies into an empty store (nothing was written)"
    ) in result.stderr, result.describe()
    assert behind.read_bytes() == before

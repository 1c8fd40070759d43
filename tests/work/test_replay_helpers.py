"""A full replay planned by helper processes (`processor.work.planning`): the same store as a
replay in one process, and a plan read before another process wrote is not applied.

The store is filled through the store's own API with the events the intake makes of the
stand-in's webhook bodies, folded as the worker folds; then damaged as a bug would.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from processor import clock
from processor.intake.bodies import parse_body, webhook_event
from processor.sandbox.webhook_bodies import (
    company_event,
    connection_event,
    encode,
    new_company,
    new_connection,
)
from processor.work.folding import fold_companies, rebuild_companies
from processor.work.planning import Planners
from processor.work.replay import batches
from store import NewEvent, Store, open_store
from tests.cli_support import Cli

pytestmark = pytest.mark.backends("sqlite")  # helpers need SQLite's count of commits
COMPANIES = 1200  # above the dry run's table (200), and over two pages of 500


def events_of(company_id: str, *, linking: bool = True) -> list[NewEvent]:
    """`company.created` and, if `linking`, `connection.created`, as the intake stores them."""
    company = new_company(f"Helper {company_id[:8]} Ltd", company_id=company_id)
    bodies = [encode(company_event("company.created", company))]
    if linking:
        connection = new_connection(company_id, "gbol")
        bodies.append(encode(connection_event("connection.created", company, connection)))
    return [
        webhook_event(
            parse_body(body),
            body=body,
            message_id=f"msg_{uuid.uuid4().hex}",
            timestamp=int(time.time()),
            headers={},
            received_at=clock.now(),
        )
        for body in bodies
    ]


def filled(database: Path, companies: int) -> list[str]:
    """A store of `companies` companies, folded; the last tenth of them left pending."""
    ids = sorted(str(uuid.uuid4()) for _ in range(companies))
    store = open_store(f"sqlite:///{database}")
    try:
        with store.transaction():
            store.append_events(
                [e for n, c in enumerate(ids) for e in events_of(c, linking=n % 3 > 0)]
            )
            fold_companies(store, ids[: companies - companies // 10], clock.now())
    finally:
        store.close()
    return ids


def damaged(database: Path, ids: list[str]) -> None:
    """States lost and corrupted, and outcomes wrong, as a bug would leave them."""
    with sqlite3.connect(database) as conn:
        conn.executemany("DELETE FROM companies WHERE company_id = ?", [(c,) for c in ids[::7]])
        conn.executemany(
            "UPDATE companies SET state = 'created', data = ? WHERE company_id = ?",
            [(json.dumps({"company_id": c, "name": "Wrong"}), c) for c in ids[1::5]],
        )
        conn.execute(
            "UPDATE events SET outcome = 'ignored' WHERE seq % 11 = 0 AND outcome IS NOT NULL"
        )


def contents(database: Path) -> dict[str, Any]:
    """What a replay writes, without the times it writes them at."""
    with sqlite3.connect(database) as conn:
        return {
            "companies": conn.execute(
                "SELECT company_id, state, data FROM companies ORDER BY company_id"
            ).fetchall(),
            "events": conn.execute(
                "SELECT seq, outcome, processed_at IS NULL, fold_order FROM events ORDER BY seq"
            ).fetchall(),
            "effects": conn.execute(
                "SELECT company_id, kind, status FROM effects ORDER BY id"
            ).fetchall(),
        }


def replay_line(stderr: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stderr.splitlines() if '"action": "replay"' in line]
    assert len(lines) == 1, stderr
    return dict(lines[0])


def test_helpers_replay_to_the_same_store_as_one_process(tmp_path: Path) -> None:
    original = tmp_path / "original.db"
    ids = filled(original, COMPANIES)
    damaged(original, ids)
    copies = {processes: tmp_path / f"replayed-{processes}.db" for processes in ("1", "2")}
    dry_runs = {}
    for processes, copy in copies.items():
        shutil.copy(original, copy)
        cli = Cli(copy, "http://127.0.0.1:9", REPLAY_PROCESSES=processes)
        dry_runs[processes] = cli.ok("replay", "--dry-run")
        result = cli.ok("replay")
        assert f"of {COMPANIES} companies" in result.stdout, result.describe()
        line = replay_line(result.stderr)
        if processes == "2":
            assert (line["helpers"], line["pages_reread"]) == (2, 0), line
            assert line["pages_planned"] == len(list(batches(ids))), line
        else:
            assert (line["helpers"], line["pages_planned"]) == (0, 0), line
    assert dry_runs["1"].stdout == dry_runs["2"].stdout
    assert "would change" in dry_runs["2"].stdout
    one, helped = (contents(copies[p]) for p in ("1", "2"))
    assert one == helped
    # And the replay repaired what was damaged: as a store never damaged, folded whole.
    assert len(one["companies"]) == COMPANIES
    assert not any(pending for _, _, pending, _ in one["events"])


def test_a_plan_read_before_another_process_wrote_is_read_again(tmp_path: Path) -> None:
    database = tmp_path / "processor.db"
    url = f"sqlite:///{database}"
    ids = filled(database, 40)
    store = open_store(url)
    other = open_store(url)
    try:
        with Planners(url, 2) as planners:
            pages = planners.rebuilds(store, batches(ids, size=20))
            first_page, rebuild_first = next(pages)
            # While the plans wait, another process (a `serve`) stores an event of a company
            # of the first page: its plan no longer says what the store holds.
            late = first_page[0]
            with other.transaction():
                other.append_events(events_of(late, linking=False)[:1])
            with store.transaction():
                reports = rebuild_first(store, clock.now())
            by_id = {report.company_id: report for report in reports}
            assert (planners.applied, planners.reread) == (0, 1)
            fresh = _rebuilt_alone(url, late)
            assert by_id[late].events == fresh
            # The second page was asked for before the write too (pages are asked ahead):
            # read again as well. (The other test sees plans used when nothing else writes.)
            _, rebuild_second = next(pages)
            with store.transaction():
                rebuild_second(store, clock.now())
            assert (planners.applied, planners.reread) == (0, 2)
    finally:
        store.close()
        other.close()


def _rebuilt_alone(url: str, company_id: str) -> int:
    """How many events a rebuild in its own transaction finds for the company now."""
    store: Store = open_store(url)
    try:
        with store.transaction():
            [report] = rebuild_companies(store, [company_id], clock.now())
        return report.events
    finally:
        store.close()


def test_pages_a_failed_helper_did_not_plan_are_rebuilt_by_the_replay(tmp_path: Path) -> None:
    """Helpers that cannot work (here: their store is not where they look) stop planning, and
    the replay rebuilds every page itself, with one warning."""
    database = tmp_path / "processor.db"
    ids = filled(database, 30)
    store = open_store(f"sqlite:///{database}")
    try:
        with Planners(f"sqlite:///{tmp_path / 'elsewhere' / 'missing.db'}", 2) as planners:
            reports = []
            for _, rebuild_page in planners.rebuilds(store, batches(ids, size=10)):
                with store.transaction():
                    reports += rebuild_page(store, clock.now())
        assert planners.failure is not None
        assert (planners.applied, planners.reread) == (0, 3)
        assert sorted(report.company_id for report in reports) == ids
        assert sum(report.events for report in reports) == sum(1 + (n % 3 > 0) for n in range(30))
    finally:
        store.close()

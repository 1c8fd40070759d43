"""Reads for replays and rebuilds: whole logs and states of many companies, lean and in bulk."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from store.records import LoggedEvent
from store.sqlite import rows
from store.sqlite.connected import Connected

# The columns of a LoggedEvent, in its order.
LOGGED_COLUMNS = (
    "seq, event_type, source, company_id, generated_date, fields, processed_at, outcome"
)
# A company's log for a rebuild: its folded events in fold order, then its pending ones oldest
# generatedDate first (`fold_order IS NULL` sorts them last).
LOG_FILTER = "(fold_order IS NOT NULL OR processed_at IS NULL)"
LOG_ORDER = "ORDER BY company_id, fold_order IS NULL, fold_order, generated_date, seq"

_new = tuple.__new__


def logged_events(
    cursor: Iterable[Sequence[Any]],
    found: dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]],
    loads: Any,
) -> None:
    """Add rows of LOGGED_COLUMNS, in LOG_ORDER, to the (folded, pending) lists of their
    company in `found`; the rows of a company not in `found` are skipped."""
    current: object = None
    lists: tuple[list[LoggedEvent], list[LoggedEvent]] | None = None
    for row in cursor:
        company_id = row[3]
        if company_id != current:  # the rows come a company at a time
            current = company_id
            lists = found.get(company_id)
        if lists is None:
            continue
        processed = row[6]
        # `tuple.__new__` is what LoggedEvent(...) does, without its Python-level __new__.
        lists[processed is None].append(
            _new(
                LoggedEvent,
                (row[0], row[1], row[2], company_id, row[4], loads(row[5]), processed, row[7]),
            )
        )


class SqliteReplaying(Connected):
    """What a replay reads of each batch of companies, in a few statements."""

    def replay_logs_of(
        self, company_ids: Sequence[str], *, key_range: bool = False
    ) -> dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]]:
        """Each company's folded events in fold order and its pending events oldest
        generatedDate first (every one a key), read as `LoggedEvent`s.

        `key_range`: few other companies lie between the least and the greatest of these ids (a
        page of every company): one range of ids is read (the others' rows skipped) rather than
        a list of ids looked up one by one."""
        found: dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]] = {
            company_id: ([], []) for company_id in company_ids
        }
        if not company_ids:
            return found
        if key_range:
            cursor = self.conn.execute(
                f"SELECT {LOGGED_COLUMNS} FROM events WHERE company_id BETWEEN ? AND ? "
                f"AND {LOG_FILTER} {LOG_ORDER}",
                [min(company_ids), max(company_ids)],
            )
            logged_events(cursor, found, rows.loads)
            return found
        for start in range(0, len(company_ids), rows.MAX_PARAMETERS):
            chunk = list(company_ids[start : start + rows.MAX_PARAMETERS])
            marks = ", ".join("?" * len(chunk))
            cursor = self.conn.execute(
                f"SELECT {LOGGED_COLUMNS} FROM events WHERE company_id IN ({marks}) "
                f"AND {LOG_FILTER} {LOG_ORDER}",
                chunk,
            )
            logged_events(cursor, found, rows.loads)
        return found

    def replay_states_of(
        self, company_ids: Sequence[str], *, key_range: bool = False
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """The state and data of each of these companies that has one (`companies_of` without
        the rest of the row); `key_range` as for `replay_logs_of`."""
        loads = rows.loads
        if not company_ids:
            return {}
        if key_range:
            wanted = set(company_ids)
            found = self.conn.execute(
                "SELECT company_id, state, data FROM companies WHERE company_id BETWEEN ? AND ?",
                [min(company_ids), max(company_ids)],
            )
            return {
                company_id: (state, loads(data))
                for company_id, state, data in found
                if company_id in wanted
            }
        states: dict[str, tuple[str, dict[str, Any]]] = {}
        for start in range(0, len(company_ids), rows.MAX_PARAMETERS):
            chunk = list(company_ids[start : start + rows.MAX_PARAMETERS])
            marks = ", ".join("?" * len(chunk))
            found = self.conn.execute(
                f"SELECT company_id, state, data FROM companies WHERE company_id IN ({marks})",
                chunk,
            )
            for company_id, state, data in found:
                states[company_id] = (state, loads(data))
        return states

    def states_of(self, company_ids: Sequence[str]) -> dict[str, str]:
        """The onboarding state of each of these companies that has one (its data unread)."""
        found: dict[str, str] = {}
        for start in range(0, len(company_ids), rows.MAX_PARAMETERS):
            chunk = list(company_ids[start : start + rows.MAX_PARAMETERS])
            marks = ", ".join("?" * len(chunk))
            found.update(
                self.conn.execute(
                    f"SELECT company_id, state FROM companies WHERE company_id IN ({marks})", chunk
                ).fetchall()
            )
        return found

    def commits_elsewhere(self) -> int | None:
        """SQLite's `data_version`: it changes when another connection commits."""
        row = self.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0]) if row else None

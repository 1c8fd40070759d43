"""Reads for replays and rebuilds: whole logs and states of many companies, lean and in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.postgres import rows
from store.postgres.connected import Connected
from store.records import LoggedEvent
from store.sqlite.replaying import LOG_FILTER, LOG_ORDER, LOGGED_COLUMNS, logged_events


class PostgresReplaying(Connected):
    """What a replay reads of each batch of companies, in a few statements."""

    def replay_logs_of(
        self, company_ids: Sequence[str], *, key_range: bool = False
    ) -> dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]]:
        """Each company's folded events in fold order and its pending events oldest
        generatedDate first (every one a key), read as `LoggedEvent`s.

        `key_range`: few other companies lie between the least and the greatest of these ids (a
        page of every company): one range of ids is read (the others' rows skipped). Ids are
        `COLLATE "C"`: byte order, as Python's `min` and `max` order them."""
        found: dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]] = {
            company_id: ([], []) for company_id in company_ids
        }
        if not company_ids:
            return found
        where, params = _which(company_ids, key_range)
        cursor = self.conn.execute(
            f"SELECT {LOGGED_COLUMNS} FROM events WHERE {where} AND {LOG_FILTER} {LOG_ORDER}",
            params,
        )
        logged_events(cursor, found, rows.loads)
        return found

    def replay_states_of(
        self, company_ids: Sequence[str], *, key_range: bool = False
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """The state and data of each of these companies that has one (`companies_of` without
        the rest of the row); `key_range` as for `replay_logs_of`."""
        if not company_ids:
            return {}
        where, params = _which(company_ids, key_range)
        found = self.conn.execute(
            f"SELECT company_id, state, data FROM companies WHERE {where}", params
        )
        loads = rows.loads
        wanted = set(company_ids)
        return {
            company_id: (state, loads(data))
            for company_id, state, data in found
            if company_id in wanted
        }

    def states_of(self, company_ids: Sequence[str]) -> dict[str, str]:
        """The onboarding state of each of these companies that has one (its data unread)."""
        found = self.conn.execute(
            "SELECT company_id, state FROM companies WHERE company_id = ANY(%s)",
            [list(company_ids)],
        )
        return {row[0]: row[1] for row in found}

    def commits_elsewhere(self) -> int | None:
        """None: PostgreSQL keeps no count of other sessions' commits to compare."""
        return None


def _which(company_ids: Sequence[str], key_range: bool) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) that picks these companies' rows."""
    if key_range:
        return "company_id BETWEEN %s AND %s", [min(company_ids), max(company_ids)]
    return "company_id = ANY(%s)", [list(company_ids)]

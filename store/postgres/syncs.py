"""Every expense sync of each company: one row per sync, merged from its reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from store.postgres.connected import Connected
from store.records import SyncPage, SyncRow

COLUMNS = "company_id, sync_id, at, outcome, data, updated_at"
SAVE = (
    f"INSERT INTO expense_syncs (key, {COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET at = excluded.at, outcome = excluded.outcome, "
    "data = excluded.data, updated_at = excluded.updated_at"
)


class PostgresExpenseSyncs(Connected):
    """The syncs Codat reported, newest first by the time of the sync."""

    def sync_rows(self, company_id: str, sync_ids: Sequence[str]) -> dict[str, SyncRow]:
        keys = [sync_key(company_id, sync_id) for sync_id in sync_ids]
        if not keys:
            return {}
        marks = ", ".join("%s" for _ in keys)
        found = self.conn.execute(
            f"SELECT {COLUMNS} FROM expense_syncs WHERE key IN ({marks})", keys
        ).fetchall()
        return {row[1]: _row(row) for row in found}

    def save_syncs(
        self,
        company_id: str,
        syncs: Sequence[tuple[str, str, str | None, dict[str, Any]]],
        now: str,
    ) -> None:
        rows = [
            (sync_key(company_id, sync_id), company_id, sync_id, at, outcome, _json(data), now)
            for sync_id, at, outcome, data in syncs
        ]
        with self.conn.cursor() as cursor:
            cursor.executemany(SAVE, rows)

    def syncs(self, company_id: str, *, limit: int, after: str | None = None) -> SyncPage:
        where, params = "company_id = %s", [company_id]
        if after is not None:
            at, _, sync_id = after.partition(" ")
            where += " AND (at < %s OR (at = %s AND sync_id < %s))"
            params += [at, at, sync_id]
        found = self.conn.execute(
            f"SELECT {COLUMNS} FROM expense_syncs WHERE {where} "
            "ORDER BY at DESC, sync_id DESC LIMIT %s",
            [*params, limit + 1],
        ).fetchall()
        page = [_row(row) for row in found[:limit]]
        more = len(found) > limit
        return SyncPage(page, f"{page[-1].at} {page[-1].sync_id}" if more else None)


def sync_key(company_id: str, sync_id: str) -> str:
    """One text key per row: store copy copies each table in the order of a single key."""
    return f"{company_id}/{sync_id}"


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _row(row: Sequence[Any]) -> SyncRow:
    return SyncRow(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])

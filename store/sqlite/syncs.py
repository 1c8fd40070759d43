"""Every expense sync of each company: one row per sync, merged from its reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from store.records import SyncPage, SyncRow
from store.sqlite.connected import Connected

COLUMNS = "company_id, sync_id, at, outcome, data, updated_at"
SAVE = (
    f"INSERT INTO expense_syncs (key, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET at = excluded.at, outcome = excluded.outcome, "
    "data = excluded.data, updated_at = excluded.updated_at"
)


class SqliteExpenseSyncs(Connected):
    """The syncs Codat reported, newest first by the time of the sync."""

    def sync_rows(self, company_id: str, sync_ids: Sequence[str]) -> dict[str, SyncRow]:
        keys = [sync_key(company_id, sync_id) for sync_id in sync_ids]
        if not keys:
            return {}
        marks = ", ".join("?" for _ in keys)
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
        self.conn.executemany(SAVE, rows)

    def syncs(self, company_id: str, *, limit: int, after: str | None = None) -> SyncPage:
        where, params = "company_id = ?", [company_id]
        if after is not None:
            at, _, sync_id = after.partition(" ")
            where += " AND (at < ? OR (at = ? AND sync_id < ?))"
            params += [at, at, sync_id]
        found = self.conn.execute(
            f"SELECT {COLUMNS} FROM expense_syncs WHERE {where} "
            "ORDER BY at DESC, sync_id DESC LIMIT ?",
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

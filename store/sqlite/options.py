"""The snapshot of each company's expense configuration choices: one row per company."""

from __future__ import annotations

import json
from typing import Any

from store.records import OptionsSnapshot
from store.sqlite.connected import Connected


class SqliteExpenseOptions(Connected):
    """The choices last fetched from Codat for each company, replaced by every fetch."""

    def save_options(self, company_id: str, data: dict[str, Any], now: str) -> None:
        self.conn.execute(
            "INSERT INTO expense_options (company_id, fetched_at, data) VALUES (?, ?, ?) "
            "ON CONFLICT (company_id) DO UPDATE SET fetched_at = excluded.fetched_at, "
            "data = excluded.data",
            [company_id, now, json.dumps(data, separators=(",", ":"))],
        )

    def options(self, company_id: str) -> OptionsSnapshot | None:
        row = self.conn.execute(
            "SELECT company_id, fetched_at, data FROM expense_options WHERE company_id = ?",
            [company_id],
        ).fetchone()
        return None if row is None else OptionsSnapshot(row[0], row[1], json.loads(row[2]))

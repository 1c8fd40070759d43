"""Company state: one row per company, the fold of its events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.records import CompanyRow, Page
from store.sqlite import rows
from store.sqlite.connected import Connected


class SqliteCompanyStates(Connected):
    """The state each company's events fold into, and the queries over it."""

    def company(self, company_id: str) -> CompanyRow | None:
        row = self.conn.execute(
            "SELECT company_id, state, data, updated_at, checked_at FROM companies "
            "WHERE company_id = ?",
            [company_id],
        ).fetchone()
        return rows.company_row(row) if row is not None else None

    def save_company(self, company_id: str, state: str, data: dict[str, Any], now: str) -> None:
        self.conn.execute(
            "INSERT INTO companies (company_id, state, data, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (company_id) DO UPDATE SET state = excluded.state, "
            "data = excluded.data, updated_at = excluded.updated_at",
            [company_id, state, rows.dumps(data), now],
        )

    def companies_of(self, company_ids: Sequence[str]) -> dict[str, CompanyRow]:
        """The stored states of these companies (those that have one), in one query."""
        found: dict[str, CompanyRow] = {}
        for start in range(0, len(company_ids), rows.MAX_PARAMETERS):
            chunk = list(company_ids[start : start + rows.MAX_PARAMETERS])
            marks = ", ".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT {rows.COMPANY_COLUMNS} FROM companies WHERE company_id IN ({marks})",
                chunk,
            ):
                company = rows.company_row(row)
                found[company.company_id] = company
        return found

    def save_companies(self, states: Sequence[tuple[str, str, dict[str, Any]]], now: str) -> None:
        """Save several companies' states: (company id, state, data) each."""
        self.conn.executemany(
            "INSERT INTO companies (company_id, state, data, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (company_id) DO UPDATE SET state = excluded.state, "
            "data = excluded.data, updated_at = excluded.updated_at",
            [(company_id, state, rows.dumps(data), now) for company_id, state, data in states],
        )

    def mark_checked(self, company_id: str, now: str) -> None:
        self.conn.execute(
            "UPDATE companies SET checked_at = ? WHERE company_id = ?", [now, company_id]
        )

    def delete_company_state(self, company_id: str) -> None:
        self.conn.execute("DELETE FROM companies WHERE company_id = ?", [company_id])

    def companies(self, *, state: str | None, limit: int, after: str | None) -> Page:
        """A page of companies ordered by id, optionally in one state."""
        where, params = ["1 = 1"], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if after is not None:
            where.append("company_id > ?")
            params.append(after)
        found = self.conn.execute(
            f"SELECT {rows.COMPANY_COLUMNS} FROM companies "
            f"WHERE {' AND '.join(where)} ORDER BY company_id LIMIT ?",
            [*params, limit + 1],
        ).fetchall()
        page = [rows.company_row(row) for row in found[:limit]]
        next_after = page[-1].company_id if len(found) > limit and page else None
        return Page(page, next_after)

    def company_ids(self) -> list[str]:
        """Every company that has an event or a state."""
        ids = self.conn.execute(
            "SELECT company_id FROM companies UNION "
            "SELECT DISTINCT company_id FROM events WHERE company_id IS NOT NULL"
        )
        return sorted(row[0] for row in ids)

    def knows_company(self, company_id: str) -> bool:
        """Whether the store has a state or any event for this company."""
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM companies WHERE company_id = ?) "
            "OR EXISTS (SELECT 1 FROM events WHERE company_id = ?)",
            [company_id, company_id],
        ).fetchone()
        return bool(row[0])

    def companies_named(self, name: str) -> list[str]:
        """Ids of the stored companies with exactly this name."""
        found = self.conn.execute(
            "SELECT company_id FROM companies WHERE json_extract(data, '$.name') = ? "
            "ORDER BY company_id",
            [name],
        )
        return [row[0] for row in found]

    def state_counts(self) -> dict[str, int]:
        """Companies per state, from the counts the companies' triggers keep (migration 6):
        a few rows read, where counting would read every company."""
        found = self.conn.execute(
            "SELECT state, SUM(companies) FROM company_state_counts GROUP BY state "
            "HAVING SUM(companies) <> 0"
        )
        return {row[0]: int(row[1]) for row in found}

"""Company state: one row per company, the fold of its events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.postgres import rows
from store.postgres.connected import Connected
from store.records import CompanyRow, Page


class PostgresCompanyStates(Connected):
    """The state each company's events fold into, and the queries over it."""

    def company(self, company_id: str) -> CompanyRow | None:
        row = self.conn.execute(
            f"SELECT {rows.COMPANY_COLUMNS} FROM companies WHERE company_id = %s", [company_id]
        ).fetchone()
        return rows.company_row(row) if row is not None else None

    def save_company(self, company_id: str, state: str, data: dict[str, Any], now: str) -> None:
        self.conn.execute(
            "INSERT INTO companies (company_id, state, data, updated_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (company_id) DO UPDATE SET state = excluded.state, "
            "data = excluded.data, updated_at = excluded.updated_at",
            [company_id, state, rows.dumps(data), now],
        )

    def companies_of(self, company_ids: Sequence[str]) -> dict[str, CompanyRow]:
        """The stored states of these companies (those that have one), in one query."""
        found = self.conn.execute(
            f"SELECT {rows.COMPANY_COLUMNS} FROM companies WHERE company_id = ANY(%s)",
            [list(company_ids)],
        )
        return {row[0]: rows.company_row(row) for row in found}

    def save_companies(self, states: Sequence[tuple[str, str, dict[str, Any]]], now: str) -> None:
        """Save several companies' states: (company id, state, data) each, in one statement."""
        if not states:
            return
        self.conn.execute(
            "INSERT INTO companies (company_id, state, data, updated_at) "
            "SELECT company_id, state, data, %s FROM unnest(%s::text[], %s::text[], %s::text[]) "
            "AS saved (company_id, state, data) "
            "ON CONFLICT (company_id) DO UPDATE SET state = excluded.state, "
            "data = excluded.data, updated_at = excluded.updated_at",
            [
                now,
                [company_id for company_id, _, _ in states],
                [state for _, state, _ in states],
                [rows.dumps(data) for _, _, data in states],
            ],
        )

    def mark_checked(self, company_id: str, now: str) -> None:
        self.conn.execute(
            "UPDATE companies SET checked_at = %s WHERE company_id = %s", [now, company_id]
        )

    def delete_company_state(self, company_id: str) -> None:
        self.conn.execute("DELETE FROM companies WHERE company_id = %s", [company_id])

    def companies(self, *, state: str | None, limit: int, after: str | None) -> Page:
        """A page of companies ordered by id, optionally in one state."""
        where, params = ["TRUE"], []
        if state is not None:
            where.append("state = %s")
            params.append(state)
        if after is not None:
            where.append("company_id > %s")
            params.append(after)
        found = self.conn.execute(
            f"SELECT {rows.COMPANY_COLUMNS} FROM companies "
            f"WHERE {' AND '.join(where)} ORDER BY company_id LIMIT %s",
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
            "SELECT EXISTS (SELECT 1 FROM companies WHERE company_id = %s) "
            "OR EXISTS (SELECT 1 FROM events WHERE company_id = %s)",
            [company_id, company_id],
        ).fetchone()
        return bool(row and row[0])

    def companies_named(self, name: str) -> list[str]:
        """Ids of the stored companies with exactly this name."""
        # The column is TEXT (see schema.py), read as JSON here only.
        found = self.conn.execute(
            "SELECT company_id FROM companies WHERE data::json ->> 'name' = %s ORDER BY company_id",
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

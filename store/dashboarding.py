"""The dashboard's reads, each one indexed query: SQL shared by both backends.

Every read is bounded: a page (`limit`) walked by keyset from a cursor, or a count that stops at
`cap` (`count_*` answer `cap` when there are at least that many), so a page view costs the same
at a thousand companies as at a million. The indexes are migration 6 of each backend; each
backend gives the placeholder and the expressions over the JSON state its indexes are built on
(a query uses an expression index only when it spells the indexed expression the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.records import EFFECT_FAILED, CompanyRow, Effect
from store.sqlite import rows

# The largest code point: `text + TOP` is above every string that starts with `text`.
TOP = "\U0010ffff"
COLUMNS = rows.COMPANY_COLUMNS
# A literal, as in the partial index effects_failed (a bound value would not match it).
FAILED = f"status = '{EFFECT_FAILED}'"


def ascii_lower(text: str) -> str:
    """Lower case as the databases' lower() under a byte collation: ASCII letters only."""
    return text.translate(_LOWER)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class DashboardSql:
    """The reads; a backend sets `MARK` and the indexed expressions, and has `conn`."""

    conn: Any
    MARK = "?"
    EXPLAIN = "EXPLAIN QUERY PLAN"
    # When a list, each read also appends its query and the database's plan of it (tests and
    # the benchmark check that every read is an index search, never a scan of a table).
    plans: list[tuple[str, str]] | None = None
    # lower(name), as indexed (companies_name).
    NAME = ""
    # The newest sync's time, and the condition on its outcome (companies_sync_failing).
    FAILING_AT = ""
    FAILING = ""
    # The newest sync's time, else when the configuration was read (companies_sync_quiet).
    QUIET_SINCE = ""
    # The state column, spelled so that the planner does not pick an index for it.
    UNINDEXED_STATE = "+state"

    def companies_newest(
        self, *, state: str | None, limit: int, before: tuple[str, str] | None = None
    ) -> list[CompanyRow]:
        """Companies, latest change first, optionally in one state; `before` is the
        (updated_at, company_id) of the last row of the previous page."""
        m = self.MARK
        where, params = ["1 = 1"], []
        if state is not None:
            where.append(f"state = {m}")
            params.append(state)
        if before is not None:
            where.append(f"(updated_at, company_id) < ({m}, {m})")
            params += [before[0], before[1]]
        return self._companies(
            f"WHERE {' AND '.join(where)} ORDER BY updated_at DESC, company_id DESC LIMIT {m}",
            [*params, limit],
        )

    def search_companies(self, text: str, *, state: str | None, limit: int) -> list[CompanyRow]:
        """Companies whose id starts with `text`, then those whose name does (ASCII letters in
        any case), optionally in one state: at most `limit` of each."""
        m = self.MARK
        in_state = f" AND state = {m}" if state is not None else ""
        extra = [state] if state is not None else []
        by_id = self._companies(
            f"WHERE company_id >= {m} AND company_id < {m}{in_state} ORDER BY company_id LIMIT {m}",
            [text, text + TOP, *extra, limit],
        )
        lowered = ascii_lower(text)
        # The state is a filter here, not an index: the names' index keeps the order.
        in_state = f" AND {self.UNINDEXED_STATE} = {m}" if state is not None else ""
        by_name = self._companies(
            f"WHERE {self.NAME} >= {m} AND {self.NAME} < {m}{in_state} "
            f"ORDER BY {self.NAME}, company_id LIMIT {m}",
            [lowered, lowered + TOP, *extra, limit],
        )
        seen = {row.company_id for row in by_id}
        return by_id + [row for row in by_name if row.company_id not in seen]

    def companies_unchanged_since(self, state: str, before: str, *, limit: int) -> list[CompanyRow]:
        """Companies in `state` whose row last changed before `before`, oldest first."""
        m = self.MARK
        return self._companies(
            f"WHERE state = {m} AND updated_at < {m} ORDER BY updated_at, company_id LIMIT {m}",
            [state, before, limit],
        )

    def count_unchanged_since(self, state: str, before: str, *, cap: int) -> int:
        m = self.MARK
        return self._count(
            f"SELECT 1 FROM companies WHERE state = {m} AND updated_at < {m} LIMIT {m}",
            [state, before, cap],
        )

    def recent_failed_effects(self, *, limit: int) -> list[Effect]:
        """Commands that failed for good, latest failure first."""
        m = self.MARK
        found = self._rows(
            f"SELECT {rows.EFFECT_COLUMNS} FROM effects WHERE {FAILED} "
            f"ORDER BY updated_at DESC, id DESC LIMIT {m}",
            [limit],
        )
        return [rows.effect(row) for row in found]

    def count_failed_effects(self, *, cap: int) -> int:
        m = self.MARK
        return self._count(f"SELECT 1 FROM effects WHERE {FAILED} LIMIT {m}", [cap])

    def failing_syncs(self, *, limit: int) -> list[CompanyRow]:
        """Companies whose newest expense sync failed, latest first."""
        m = self.MARK
        return self._companies(
            f"WHERE {self.FAILING} ORDER BY {self.FAILING_AT} DESC, company_id DESC LIMIT {m}",
            [limit],
        )

    def count_failing_syncs(self, *, cap: int) -> int:
        m = self.MARK
        return self._count(f"SELECT 1 FROM companies WHERE {self.FAILING} LIMIT {m}", [cap])

    def silent_syncs(self, before: str, *, limit: int) -> list[CompanyRow]:
        """Configured companies with no expense sync (nor configuration) since `before`, and
        whose newest sync did not fail (those are failing), longest silent first."""
        m = self.MARK
        return self._companies(
            f"WHERE {self._silent()} ORDER BY {self.QUIET_SINCE}, company_id LIMIT {m}",
            [before, limit],
        )

    def count_silent_syncs(self, before: str, *, cap: int) -> int:
        m = self.MARK
        return self._count(
            f"SELECT 1 FROM companies WHERE {self._silent()} LIMIT {m}", [before, cap]
        )

    def _silent(self) -> str:
        return (
            f"state = 'configured' AND {self.QUIET_SINCE} < {self.MARK} AND NOT "
            f"coalesce({self.FAILING}, FALSE)"
        )

    def _companies(self, where: str, params: Sequence[Any]) -> list[CompanyRow]:
        found = self._rows(f"SELECT {COLUMNS} FROM companies {where}", params)
        return [rows.company_row(row) for row in found]

    def _count(self, bounded: str, params: Sequence[Any]) -> int:
        found = self._rows(f"SELECT COUNT(*) FROM ({bounded}) AS bounded", params)
        return int(found[0][0])

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self.plans is not None:
            plan = self.conn.execute(f"{self.EXPLAIN} {sql}", list(params)).fetchall()
            self.plans.append((sql, "\n".join(str(row[-1]) for row in plan)))
        return list(self.conn.execute(sql, list(params)).fetchall())

"""The calls made to Codat about each company: the newest CALLS_KEPT of each are kept."""

from __future__ import annotations

from collections.abc import Sequence

from store.postgres.connected import Connected
from store.records import CALLS_KEPT, CodatCall

COLUMNS = "company_id, at, operation, status, duration_ms, correlation_id, error"


class PostgresCodatCalls(Connected):
    """Each company's calls to Codat, for its timeline (`codat_calls_company` index)."""

    def record_codat_calls(self, calls: Sequence[CodatCall]) -> None:
        if not calls:
            return
        with self.conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO codat_calls ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        c.company_id,
                        c.at,
                        c.operation,
                        c.status,
                        c.duration_ms,
                        c.correlation_id,
                        c.error,
                    )
                    for c in calls
                ],
            )
        for company_id in sorted({c.company_id for c in calls}):
            self.conn.execute(
                "DELETE FROM codat_calls WHERE company_id = %s AND id <= ("
                "SELECT id FROM codat_calls WHERE company_id = %s "
                "ORDER BY id DESC LIMIT 1 OFFSET %s)",
                [company_id, company_id, CALLS_KEPT],
            )

    def codat_calls(self, company_id: str, limit: int = 200) -> list[CodatCall]:
        found = self.conn.execute(
            f"SELECT {COLUMNS} FROM codat_calls WHERE company_id = %s ORDER BY id DESC LIMIT %s",
            [company_id, limit],
        ).fetchall()
        return [CodatCall(*row) for row in reversed(found)]

"""The rate-limit pause (one row, shared by every process on the store) and sync check times."""

from __future__ import annotations

from collections.abc import Sequence

from store.records import RateLimitPause, StoredEvent
from store.sqlite import rows
from store.sqlite.connected import Connected

# The partial index events_rate_limit (migration 7) covers exactly this condition.
NOTICES = "event_type IN ('client.rateLimit.reached', 'client.rateLimit.reset')"


class SqliteRateLimits(Connected):
    """Codat's rate limit as every instance sees it, and when each company's syncs were read."""

    def rate_limit_pause(self, now: str | None = None) -> RateLimitPause | None:
        row = self.conn.execute(
            "SELECT paused_until, since, reason, notice_at FROM rate_limit_pause WHERE id = 1"
        ).fetchone()
        if row is None or (now is not None and row[0] <= now):
            return None
        return RateLimitPause(row[0], row[1], row[2], row[3])

    def save_rate_limit_pause(self, pause: RateLimitPause, now: str) -> None:
        self.conn.execute(
            "INSERT INTO rate_limit_pause (id, paused_until, since, reason, notice_at, updated_at)"
            " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "paused_until = excluded.paused_until, since = excluded.since, "
            "reason = excluded.reason, notice_at = excluded.notice_at, "
            "updated_at = excluded.updated_at",
            [pause.until, pause.since, pause.reason, pause.notice_at, now],
        )

    def newest_rate_limit_notice(self) -> StoredEvent | None:
        row = self.conn.execute(
            f"SELECT {rows.EVENT_COLUMNS} FROM events WHERE {NOTICES} "
            "ORDER BY generated_date DESC, seq DESC LIMIT 1"
        ).fetchone()
        return None if row is None else rows.stored_event(row)

    def sync_checks(self, company_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = list(company_ids)
        for start in range(0, len(ids), rows.MAX_PARAMETERS):
            chunk = ids[start : start + rows.MAX_PARAMETERS]
            marks = ", ".join("?" for _ in chunk)
            found.update(
                self.conn.execute(
                    f"SELECT company_id, checked_at FROM sync_checks WHERE company_id IN ({marks})",
                    chunk,
                ).fetchall()
            )
        return found

    def mark_sync_checked(self, company_id: str, now: str) -> None:
        self.conn.execute(
            "INSERT INTO sync_checks (company_id, checked_at) VALUES (?, ?) "
            "ON CONFLICT (company_id) DO UPDATE SET checked_at = excluded.checked_at",
            [company_id, now],
        )

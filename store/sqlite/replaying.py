"""Reads for replays and rebuilds: whole logs and states of many companies, lean and in bulk."""

from __future__ import annotations

from collections.abc import Sequence

from store.records import LoggedEvent
from store.sqlite import rows
from store.sqlite.connected import Connected

# The columns of a LoggedEvent, in its order.
LOGGED_COLUMNS = (
    "seq, event_type, source, company_id, generated_date, fields, processed_at, outcome"
)


class SqliteReplaying(Connected):
    """What a replay reads of each batch of companies, in a few statements."""

    def replay_logs_of(
        self, company_ids: Sequence[str]
    ) -> dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]]:
        """Each company's folded events in fold order and its pending events oldest
        generatedDate first (every one a key), read as `LoggedEvent`s."""
        found: dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]] = {
            company_id: ([], []) for company_id in company_ids
        }
        loads = rows.loads
        for start in range(0, len(company_ids), rows.MAX_PARAMETERS):
            chunk = list(company_ids[start : start + rows.MAX_PARAMETERS])
            marks = ", ".join("?" * len(chunk))
            cursor = self.conn.execute(
                f"SELECT {LOGGED_COLUMNS} FROM events WHERE company_id IN ({marks}) "
                "AND (fold_order IS NOT NULL OR processed_at IS NULL) "
                "ORDER BY company_id, fold_order IS NULL, fold_order, generated_date, seq",
                chunk,
            )
            for (
                seq,
                event_type,
                source,
                company_id,
                generated,
                fields,
                processed,
                outcome,
            ) in cursor:
                folded, pending = found[company_id]
                (folded if processed is not None else pending).append(
                    LoggedEvent(
                        seq,
                        event_type,
                        source,
                        company_id,
                        generated,
                        loads(fields),
                        processed,
                        outcome,
                    )
                )
        return found

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

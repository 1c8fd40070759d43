"""The record of effects: intents to call Codat, their claims, attempts and outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.postgres import rows
from store.postgres.connected import Connected
from store.records import EFFECT_FAILED, EFFECT_PENDING, Effect

# Another effect of the same company and kind is open: requeueing this one would break the
# `effects_open` unique index. SQLite's `UPDATE OR IGNORE` skips such a row; in PostgreSQL the
# violation would abort the transaction, so the row is left out up front.
NO_OTHER_OPEN = (
    "NOT EXISTS (SELECT 1 FROM effects AS other WHERE other.company_id = effects.company_id "
    "AND other.kind = effects.kind AND other.status = %s)"
)


class PostgresEffects(Connected):
    """One open intent per company and kind; claims so two workers never run one at once."""

    def _requeue_failed(self, seq: int, now: str) -> bool:
        """A new delivery of an event whose effect failed puts that effect back in line."""
        row = self.conn.execute(
            "SELECT id FROM effects WHERE caused_by = %s AND status = %s ORDER BY id DESC LIMIT 1",
            [seq, EFFECT_FAILED],
        ).fetchone()
        if row is None:
            return False
        return self.requeue_effect(int(row[0]), now)

    def open_effect(
        self,
        *,
        company_id: str,
        kind: str,
        connection_id: str | None,
        idempotency_key: str,
        caused_by: int | None,
        now: str,
    ) -> int | None:
        """Record the intent to carry out an effect, unless one is already open for it."""
        # No conflict target: a clash with either the idempotency key or the open-effect index
        # (a partial unique index) inserts nothing.
        row = self.conn.execute(
            "INSERT INTO effects (company_id, kind, connection_id, idempotency_key, caused_by, "
            "status, next_attempt_at, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
            [
                company_id,
                kind,
                connection_id,
                idempotency_key,
                caused_by,
                EFFECT_PENDING,
                now,
                now,
                now,
            ],
        ).fetchone()
        return int(row[0]) if row is not None else None

    def effect(self, effect_id: int) -> Effect | None:
        found = self._effects("WHERE id = %s", [effect_id])
        return found[0] if found else None

    def open_effects(self, company_id: str) -> list[Effect]:
        return self._effects(
            "WHERE company_id = %s AND status = %s ORDER BY id", [company_id, EFFECT_PENDING]
        )

    def company_effects(self, company_id: str) -> list[Effect]:
        return self._effects("WHERE company_id = %s ORDER BY id", [company_id])

    def failed_effects(self) -> list[Effect]:
        return self._effects("WHERE status = %s ORDER BY id", [EFFECT_FAILED])

    def due_effects(self, now: str, limit: int = 100) -> list[Effect]:
        """Pending effects whose next attempt is due and that no live worker has claimed."""
        return self._effects(
            "WHERE status = %s AND next_attempt_at <= %s "
            "AND (claim_expires_at IS NULL OR claim_expires_at <= %s) "
            "ORDER BY next_attempt_at, id LIMIT %s",
            [EFFECT_PENDING, now, now, limit],
        )

    def next_effect_due(self) -> str | None:
        row = self.conn.execute(
            "SELECT MIN(next_attempt_at) FROM effects WHERE status = %s", [EFFECT_PENDING]
        ).fetchone()
        return row[0] if row else None

    def claim_effect(self, effect_id: int, owner: str, until: str, now: str) -> bool:
        """Take an effect for one attempt; False if another worker holds it or it is closed."""
        cursor = self.conn.execute(
            "UPDATE effects SET claimed_by = %s, claim_expires_at = %s WHERE id = %s "
            "AND status = %s AND (claim_expires_at IS NULL OR claim_expires_at <= %s)",
            [owner, until, effect_id, EFFECT_PENDING, now],
        )
        return cursor.rowcount == 1

    def claim_owners(self) -> list[str]:
        """Owners of the claims not released yet (expired ones included)."""
        found = self.conn.execute(
            "SELECT DISTINCT claimed_by FROM effects "
            "WHERE status = %s AND claimed_by IS NOT NULL ORDER BY claimed_by",
            [EFFECT_PENDING],
        )
        return [row[0] for row in found]

    def release_claims(self, owner: str) -> int:
        """Release every claim of an owner known to be dead, so its work need not wait."""
        cursor = self.conn.execute(
            "UPDATE effects SET claimed_by = NULL, claim_expires_at = NULL "
            "WHERE claimed_by = %s AND status = %s",
            [owner, EFFECT_PENDING],
        )
        return cursor.rowcount

    def finish_effect(
        self,
        effect_id: int,
        *,
        status: str,
        now: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Close an effect: done, failed (a dead letter) or cancelled."""
        self.conn.execute(
            "UPDATE effects SET status = %s, result = %s, "
            "last_error = COALESCE(%s, last_error), attempts = attempts + 1, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = %s WHERE id = %s",
            [status, rows.json_or_none(result), error, now, effect_id],
        )

    def retry_effect(self, effect_id: int, *, error: str, next_attempt_at: str, now: str) -> None:
        """Count a failed attempt and schedule the next one."""
        self.conn.execute(
            "UPDATE effects SET attempts = attempts + 1, last_error = %s, "
            "next_attempt_at = %s, claimed_by = NULL, claim_expires_at = NULL, updated_at = %s "
            "WHERE id = %s",
            [error, next_attempt_at, now, effect_id],
        )

    def requeue_effect(self, effect_id: int, now: str) -> bool:
        """Put a failed effect back in line, unless another one is already open for it."""
        cursor = self.conn.execute(
            "UPDATE effects SET status = %s, attempts = 0, next_attempt_at = %s, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = %s "
            f"WHERE id = %s AND status = %s AND {NO_OTHER_OPEN}",
            [EFFECT_PENDING, now, now, effect_id, EFFECT_FAILED, EFFECT_PENDING],
        )
        return cursor.rowcount == 1

    def close_effect(self, effect_id: int, status: str, now: str) -> None:
        """Close an open effect the state no longer calls for (cancelled)."""
        self.conn.execute(
            "UPDATE effects SET status = %s, claimed_by = NULL, claim_expires_at = NULL, "
            "updated_at = %s WHERE id = %s AND status = %s",
            [status, now, effect_id, EFFECT_PENDING],
        )

    def _effects(self, where: str, params: Sequence[Any]) -> list[Effect]:
        found = self.conn.execute(
            f"SELECT {rows.EFFECT_COLUMNS} FROM effects {where}", list(params)
        )
        return [rows.effect(row) for row in found]

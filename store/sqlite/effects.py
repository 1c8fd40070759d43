"""The record of effects: intents to call Codat, their claims, attempts and outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.records import EFFECT_FAILED, EFFECT_PENDING, Effect
from store.sqlite import rows
from store.sqlite.connected import Connected

# A live claim on another intent of the same company and kind: one the state cancelled while
# an attempt at it was under way. No attempt at its replacement starts before that one ends
# (and a while longer if it got no answer: see `retry_effect`), or its claim expires: two
# creates at once, under two Idempotency-Keys, would make two partner expense connections.
NO_SIBLING_CLAIMED = (
    "NOT EXISTS (SELECT 1 FROM effects AS other WHERE other.company_id = effects.company_id "
    "AND other.kind = effects.kind AND other.id != effects.id "
    "AND other.claimed_by IS NOT NULL AND other.claim_expires_at > ?)"
)

# When the newest live claim on a sibling (as above) expires; '' if there is none.
SIBLING_CLAIM_ENDS = (
    "COALESCE((SELECT MAX(other.claim_expires_at) FROM effects AS other "
    "WHERE other.company_id = effects.company_id AND other.kind = effects.kind "
    "AND other.id != effects.id AND other.claimed_by IS NOT NULL), '')"
)


# A claim its attempt's claimant still holds (any claim, when no claimant is given).
_HELD_BY = "claimed_by IS NOT NULL AND (? IS NULL OR claimed_by = ?)"


class SqliteEffects(Connected):
    """One open intent per company and kind; claims so two workers never run one at once,
    nor an intent and the one it replaced."""

    def _requeue_failed(self, seq: int, now: str) -> bool:
        """A new delivery of an event whose effect failed puts that effect back in line."""
        row = self.conn.execute(
            "SELECT id, company_id, kind FROM effects WHERE caused_by = ? AND status = ? "
            "ORDER BY id DESC LIMIT 1",
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
        cursor = self.conn.execute(
            "INSERT INTO effects (company_id, kind, connection_id, idempotency_key, caused_by, "
            "status, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
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
        )
        return int(cursor.lastrowid or 0) if cursor.rowcount else None

    def effect(self, effect_id: int) -> Effect | None:
        found = self._effects("WHERE id = ?", [effect_id])
        return found[0] if found else None

    def open_effects(self, company_id: str) -> list[Effect]:
        return self._effects("WHERE company_id = ? AND status = ?", [company_id, EFFECT_PENDING])

    def open_effects_of(self, company_ids: Sequence[str]) -> dict[str, list[Effect]]:
        """`open_effects` of several companies, in one query per few hundred (every one a key)."""
        found: dict[str, list[Effect]] = {company_id: [] for company_id in company_ids}
        for start in range(0, len(company_ids), rows.MAX_PARAMETERS):
            chunk = list(company_ids[start : start + rows.MAX_PARAMETERS])
            marks = ", ".join("?" * len(chunk))
            for effect in self._effects(
                f"WHERE company_id IN ({marks}) AND status = ? ORDER BY company_id, id",
                [*chunk, EFFECT_PENDING],
            ):
                found[effect.company_id].append(effect)
        return found

    def company_effects(self, company_id: str) -> list[Effect]:
        return self._effects("WHERE company_id = ? ORDER BY id", [company_id])

    def failed_effects(self) -> list[Effect]:
        return self._effects("WHERE status = ? ORDER BY id", [EFFECT_FAILED])

    def due_effects(self, now: str, limit: int = 100) -> list[Effect]:
        """Pending effects whose next attempt is due and that no live worker has claimed."""
        return self._effects(
            "WHERE status = ? AND next_attempt_at <= ? "
            f"AND (claim_expires_at IS NULL OR claim_expires_at <= ?) AND {NO_SIBLING_CLAIMED} "
            "ORDER BY next_attempt_at LIMIT ?",
            [EFFECT_PENDING, now, now, now, limit],
        )

    def next_effect_due(self) -> str | None:
        """When the next pending effect is due: its next attempt, or when its claim (or the
        claim on the intent it replaced) expires."""
        row = self.conn.execute(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(claim_expires_at, ''), "
            f"{SIBLING_CLAIM_ENDS})) FROM effects WHERE status = ?",
            [EFFECT_PENDING],
        ).fetchone()
        return row[0] if row else None

    def claim_effect(self, effect_id: int, owner: str, until: str, now: str) -> bool:
        """Take an effect for one attempt; False if another worker holds it or it is closed,
        or while an attempt at an intent it replaced may still be under way."""
        cursor = self.conn.execute(
            "UPDATE effects SET claimed_by = ?, claim_expires_at = ? WHERE id = ? "
            "AND status = ? AND next_attempt_at <= ? "
            f"AND (claim_expires_at IS NULL OR claim_expires_at <= ?) AND {NO_SIBLING_CLAIMED}",
            [owner, until, effect_id, EFFECT_PENDING, now, now, now],
        )
        return cursor.rowcount == 1

    def claim_owners(self) -> list[str]:
        """Owners of the claims not released yet (expired ones included, and those on
        intents closed while their attempt ran)."""
        found = self.conn.execute(
            "SELECT DISTINCT claimed_by FROM effects WHERE claimed_by IS NOT NULL "
            "ORDER BY claimed_by"
        )
        return [row[0] for row in found]

    def release_claims(self, owner: str) -> int:
        """Release every claim of an owner known to be dead, so its work need not wait."""
        cursor = self.conn.execute(
            "UPDATE effects SET claimed_by = NULL, claim_expires_at = NULL WHERE claimed_by = ?",
            [owner],
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
        owner: str | None = None,
    ) -> bool:
        """Close a pending effect: done, failed (a dead letter) or cancelled; False if it was
        no longer pending."""
        cursor = self.conn.execute(
            "UPDATE effects SET status = ?, result = ?, last_error = COALESCE(?, last_error), "
            "attempts = attempts + 1, claimed_by = NULL, claim_expires_at = NULL, "
            "updated_at = ? WHERE id = ? AND status = ?",
            [status, rows.json_or_none(result), error, now, effect_id, EFFECT_PENDING],
        )
        return cursor.rowcount == 1 or self._end_claim(effect_id, owner)

    def retry_effect(
        self,
        effect_id: int,
        *,
        error: str,
        next_attempt_at: str,
        now: str,
        hold_until: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """Count a failed attempt and schedule the next one; False if it was no longer
        pending (see `Store.retry_effect` for its claim)."""
        cursor = self.conn.execute(
            "UPDATE effects SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = ? WHERE id = ? "
            "AND status = ?",
            [error, next_attempt_at, now, effect_id, EFFECT_PENDING],
        )
        if cursor.rowcount == 1:
            return True
        if hold_until is None:
            return self._end_claim(effect_id, owner)
        self.conn.execute(
            f"UPDATE effects SET claim_expires_at = ? WHERE id = ? AND {_HELD_BY}",
            [hold_until, effect_id, owner, owner],
        )
        return False

    def _end_claim(self, effect_id: int, owner: str | None) -> bool:
        """The attempt at an effect closed meanwhile has ended: its claim, kept so that no
        attempt at a replacement would start before, is released. Always False (the effect
        was not pending)."""
        self.conn.execute(
            "UPDATE effects SET claimed_by = NULL, claim_expires_at = NULL "
            f"WHERE id = ? AND {_HELD_BY}",
            [effect_id, owner, owner],
        )
        return False

    def requeue_effect(self, effect_id: int, now: str) -> bool:
        """Put a failed effect back in line, unless another one is already open for it."""
        cursor = self.conn.execute(
            "UPDATE OR IGNORE effects SET status = ?, attempts = 0, next_attempt_at = ?, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = ?, requeued_at = ? "
            "WHERE id = ? AND status = ?",
            [EFFECT_PENDING, now, now, now, effect_id, EFFECT_FAILED],
        )
        return cursor.rowcount == 1

    def close_effect(self, effect_id: int, status: str, now: str) -> None:
        """Close an open effect the state no longer calls for (cancelled). Its claim stays
        until the attempt under way, if any, ends (see `NO_SIBLING_CLAIMED`)."""
        self.conn.execute(
            "UPDATE effects SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
            [status, now, effect_id, EFFECT_PENDING],
        )

    def _effects(self, where: str, params: Sequence[Any]) -> list[Effect]:
        found = self.conn.execute(
            f"SELECT {rows.EFFECT_COLUMNS} FROM effects {where}", list(params)
        )
        return [rows.effect(row) for row in found]

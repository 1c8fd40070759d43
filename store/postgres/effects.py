"""The record of effects: intents to call Codat, their claims, attempts and outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.postgres import rows
from store.postgres.connected import EFFECT_LOCKS, Connected
from store.records import EFFECT_FAILED, EFFECT_PENDING, Effect

# Another effect of the same company and kind is open: requeueing this one would break the
# `effects_open` unique index. SQLite's `UPDATE OR IGNORE` skips such a row; in PostgreSQL the
# violation would abort the transaction, so the row is left out up front.
NO_OTHER_OPEN = (
    "NOT EXISTS (SELECT 1 FROM effects AS other WHERE other.company_id = effects.company_id "
    "AND other.kind = effects.kind AND other.status = %s)"
)


# Whether a session holds the effect's claim lock (in this database: advisory locks are per
# database, and so are their rows in pg_locks).
def claim_held(alias: str, *, elsewhere: bool = False) -> str:
    """Whether a session holds the claim lock of the effect `alias` names (`elsewhere`: a
    session other than this one)."""
    other_session = " AND l.pid <> pg_backend_pid()" if elsewhere else ""
    return (
        "EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        f"AND l.classid = %s::oid AND l.objid = {alias}.id::oid AND l.objsubid = 2"
        f"{other_session})"
    )


CLAIM_HELD = claim_held("effects")

# A claim on another intent of the same company and kind: one the state cancelled while an
# attempt at it was under way. No attempt at its replacement starts before the row's claim
# ends (when the attempt does, a while later if it got no answer: see `retry_effect`; or when
# the claim expires, if its holder died), nor while another session's lock says the attempt is
# under way (however long it takes; within one process, the worker never runs two attempts for
# a company at once): two creates at once, under two Idempotency-Keys, would make two partner
# expense connections.
NO_SIBLING_CLAIMED = (
    "NOT EXISTS (SELECT 1 FROM effects AS other WHERE other.company_id = effects.company_id "
    "AND other.kind = effects.kind AND other.id <> effects.id "
    "AND other.claimed_by IS NOT NULL "
    f"AND (other.claim_expires_at > %s OR {claim_held('other', elsewhere=True)}))"
)

# When the newest claim on a sibling (as above) expires; '' if there is none.
SIBLING_CLAIM_ENDS = (
    "COALESCE((SELECT MAX(other.claim_expires_at) FROM effects AS other "
    "WHERE other.company_id = effects.company_id AND other.kind = effects.kind "
    "AND other.id <> effects.id AND other.claimed_by IS NOT NULL), '')"
)


# Whether this connection holds the effect's claim lock.
HELD_HERE = (
    "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND classid = %s::oid AND objid = %s::oid AND objsubid = 2)"
)


# A claim its attempt's claimant still holds (any claim, when no claimant is given).
_HELD_BY = "claimed_by IS NOT NULL AND (%s::text IS NULL OR claimed_by = %s)"


class PostgresEffects(Connected):
    """One open intent per company and kind; claims so two workers never run one at once,
    nor an intent and the one it replaced."""

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

    def open_effects_of(self, company_ids: Sequence[str]) -> dict[str, list[Effect]]:
        """`open_effects` of several companies, in one query (every one a key)."""
        found: dict[str, list[Effect]] = {company_id: [] for company_id in company_ids}
        for effect in self._effects(
            "WHERE company_id = ANY(%s) AND status = %s ORDER BY company_id, id",
            [list(company_ids), EFFECT_PENDING],
        ):
            found[effect.company_id].append(effect)
        return found

    def company_effects(self, company_id: str) -> list[Effect]:
        return self._effects("WHERE company_id = %s ORDER BY id", [company_id])

    def failed_effects(self) -> list[Effect]:
        return self._effects("WHERE status = %s ORDER BY id", [EFFECT_FAILED])

    def due_effects(self, now: str, limit: int = 100) -> list[Effect]:
        """Pending effects whose next attempt is due and that no live worker has claimed.

        A claim is live while its row says so and its holder's lock is held: a worker that
        died (its connection with it) frees its claims at once, whatever the row says."""
        return self._effects(
            "WHERE status = %s AND next_attempt_at <= %s "
            f"AND (claim_expires_at IS NULL OR claim_expires_at <= %s OR NOT {CLAIM_HELD}) "
            f"AND {NO_SIBLING_CLAIMED} ORDER BY next_attempt_at, id LIMIT %s",
            [EFFECT_PENDING, now, now, EFFECT_LOCKS, now, EFFECT_LOCKS, limit],
        )

    def next_effect_due(self) -> str | None:
        """When the next pending effect is due: its next attempt, or when its claim (or the
        claim on the intent it replaced) expires."""
        row = self.conn.execute(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(claim_expires_at, ''), "
            f"{SIBLING_CLAIM_ENDS})) FROM effects WHERE status = %s",
            [EFFECT_PENDING],
        ).fetchone()
        return row[0] if row else None

    def claim_effect(self, effect_id: int, owner: str, until: str, now: str) -> bool:
        """Take an effect for one attempt; False if another worker holds it or it is closed,
        or while an attempt at an intent it replaced may still be under way.

        The claim is a session lock on the effect, which the server releases if this
        connection dies, and the row's `claimed_by` for everyone to see. Taking the lock from
        no one makes any claim in the row stale (its holder died); when this connection holds
        the lock already, the row decides, as in SQLite."""
        held = self.conn.execute(f"SELECT {HELD_HERE}", [EFFECT_LOCKS, effect_id]).fetchone()
        if held and held[0]:
            return self._claim_row(effect_id, owner, until, now, stale_claims=False)
        taken = self.conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s::int)", [EFFECT_LOCKS, effect_id]
        ).fetchone()
        if not (taken and taken[0]):
            return False
        if self._claim_row(effect_id, owner, until, now, stale_claims=True):
            if self._open:
                self._claims_taken.append(effect_id)
            return True
        self._release_claim(effect_id)
        return False

    def _claim_row(
        self, effect_id: int, owner: str, until: str, now: str, *, stale_claims: bool
    ) -> bool:
        unclaimed = (
            "TRUE" if stale_claims else "(claim_expires_at IS NULL OR claim_expires_at <= %s)"
        )
        cursor = self.conn.execute(
            "UPDATE effects SET claimed_by = %s, claim_expires_at = %s WHERE id = %s "
            f"AND status = %s AND next_attempt_at <= %s AND {unclaimed} AND {NO_SIBLING_CLAIMED}",
            [
                owner,
                until,
                effect_id,
                EFFECT_PENDING,
                now,
                *([] if stale_claims else [now]),
                now,
                EFFECT_LOCKS,
            ],
        )
        return cursor.rowcount == 1

    def _release_claim(self, effect_id: int) -> None:
        """Give up this connection's lock on the effect, after its row says who may take it."""
        self._unlock(EFFECT_LOCKS, "%s::int", effect_id)

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
            "UPDATE effects SET claimed_by = NULL, claim_expires_at = NULL WHERE claimed_by = %s",
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
            "UPDATE effects SET status = %s, result = %s, "
            "last_error = COALESCE(%s, last_error), attempts = attempts + 1, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = %s "
            "WHERE id = %s AND status = %s",
            [status, rows.json_or_none(result), error, now, effect_id, EFFECT_PENDING],
        )
        closed = cursor.rowcount == 1 or self._end_claim(effect_id, owner)
        self._release_claim(effect_id)
        return closed

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
            "UPDATE effects SET attempts = attempts + 1, last_error = %s, "
            "next_attempt_at = %s, claimed_by = NULL, claim_expires_at = NULL, updated_at = %s "
            "WHERE id = %s AND status = %s",
            [error, next_attempt_at, now, effect_id, EFFECT_PENDING],
        )
        retried = cursor.rowcount == 1
        if not retried and hold_until is None:
            self._end_claim(effect_id, owner)
        elif not retried:
            # The row's claim alone keeps the replacement waiting once the lock is released.
            self.conn.execute(
                f"UPDATE effects SET claim_expires_at = %s WHERE id = %s AND {_HELD_BY}",
                [hold_until, effect_id, owner, owner],
            )
        self._release_claim(effect_id)
        return retried

    def _end_claim(self, effect_id: int, owner: str | None) -> bool:
        """The attempt at an effect closed meanwhile has ended: its claim, kept so that no
        attempt at a replacement would start before, is released (if its claimant `owner`
        still holds it). Always False (the effect was not pending)."""
        self.conn.execute(
            "UPDATE effects SET claimed_by = NULL, claim_expires_at = NULL "
            f"WHERE id = %s AND {_HELD_BY}",
            [effect_id, owner, owner],
        )
        return False

    def requeue_effect(self, effect_id: int, now: str) -> bool:
        """Put a failed effect back in line, unless another one is already open for it."""
        cursor = self.conn.execute(
            "UPDATE effects SET status = %s, attempts = 0, next_attempt_at = %s, "
            "claimed_by = NULL, claim_expires_at = NULL, updated_at = %s, requeued_at = %s "
            f"WHERE id = %s AND status = %s AND {NO_OTHER_OPEN}",
            [EFFECT_PENDING, now, now, now, effect_id, EFFECT_FAILED, EFFECT_PENDING],
        )
        return cursor.rowcount == 1

    def close_effect(self, effect_id: int, status: str, now: str) -> None:
        """Close an open effect the state no longer calls for (cancelled). Its claim (the
        row's, and the lock of its holder, this connection perhaps) stays until the attempt
        under way, if any, ends (see `NO_SIBLING_CLAIMED`)."""
        self.conn.execute(
            "UPDATE effects SET status = %s, updated_at = %s WHERE id = %s AND status = %s",
            [status, now, effect_id, EFFECT_PENDING],
        )

    def _effects(self, where: str, params: Sequence[Any]) -> list[Effect]:
        found = self.conn.execute(
            f"SELECT {rows.EFFECT_COLUMNS} FROM effects {where}", list(params)
        )
        return [rows.effect(row) for row in found]

"""Codat's rate limit: one pause of the non-urgent calls, shared through the store.

Codat says its quota is spent with a `client.rateLimit.reached` webhook (payload `dailyQuota`,
`quotaRemaining`, `expiryDate`: when the quota resets) and that it is back with
`client.rateLimit.reset`; any call may also answer 429 with `Retry-After`. Either pauses the
calls that can wait (reconciliation, option refreshes, sync look-ups) until the reset, the
expiry or the time `Retry-After` gives, for every instance on the store. Creating a partner
expense connection does not wait for it: it keeps its own retry with back-off.

The webhooks arrive without a company, so intake stores them as ignored; the worker takes the
newest one into account at each step (`refresh`), whatever order they arrived in: a notice older
than the one already applied changes nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from handlers.commands import FETCH_EXPENSE_OPTIONS, FETCH_SYNC_TRANSACTIONS
from processor import clock
from store import RateLimitPause, RateLimits, StoredEvent

log = logging.getLogger(__name__)
REACHED = "client.rateLimit.reached"
RESET = "client.rateLimit.reset"
NOTICES = (REACHED, RESET)
# The intents that wait while the pause lasts; the others (the partner expense connection,
# reading the configuration back) go ahead.
NON_URGENT = frozenset({FETCH_EXPENSE_OPTIONS, FETCH_SYNC_TRANSACTIONS})
# A `reached` notice without a usable expiry: Codat's quota is daily.
DEFAULT_NOTICE_PAUSE = timedelta(days=1)
# A 429 without `Retry-After`.
DEFAULT_RETRY_AFTER = 60.0


def after_notice(notice: StoredEvent, current: RateLimitPause | None) -> RateLimitPause:
    """The pause once `notice` (newer than any applied before) is taken into account."""
    at = notice.generated_date
    details = notice.fields.get("rateLimit")
    details = details if isinstance(details, dict) else {}
    if notice.event_type == RESET:
        if current is not None and current.since > at:
            # A 429 that came after the reset: its own pause stands.
            return RateLimitPause(current.until, current.since, current.reason, at)
        return RateLimitPause(at, at, f"{RESET} at {at}", at)
    expiry = details.get("expiryDate")
    default = clock.format_datetime(clock.parse(at) + DEFAULT_NOTICE_PAUSE)
    until = expiry if isinstance(expiry, str) and expiry > at else default
    reason = (
        f"{REACHED} at {at} ({details.get('quotaRemaining', '?')} of "
        f"{details.get('dailyQuota', '?')} daily calls left)"
    )
    if current is not None and current.until > until and current.since <= at:
        until = current.until
    return RateLimitPause(until, at, reason, at)


def refresh(store: RateLimits, now: str) -> RateLimitPause | None:
    """Take the newest rate-limit notice into account if it is news; the pause in force."""
    notice = store.newest_rate_limit_notice()
    stored = store.rate_limit_pause()
    if notice is not None and (stored is None or (stored.notice_at or "") < notice.generated_date):
        active = stored if stored is not None and stored.until > now else None
        updated = after_notice(notice, active)
        store.save_rate_limit_pause(updated, now)
        _log_change(active, updated, now)
    return store.rate_limit_pause(now)


def pause_for_429(
    store: RateLimits, retry_after: float | None, what: str, now: str
) -> RateLimitPause:
    """Codat answered 429: pause until the time `Retry-After` gives (or a minute)."""
    seconds = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
    until = clock.format_datetime(clock.parse(now) + timedelta(seconds=seconds))
    stored = store.rate_limit_pause()
    active = stored if stored is not None and stored.until > now else None
    if active is not None and active.until >= until:
        return active
    pause = RateLimitPause(
        until,
        active.since if active is not None else now,
        f"Codat answered 429 to {what} (Retry-After {seconds:g} s)",
        stored.notice_at if stored is not None else None,
    )
    store.save_rate_limit_pause(pause, now)
    _log_change(active, pause, now)
    return pause


def describe(pause: RateLimitPause) -> str:
    return f"paused until {pause.until} by Codat's rate limit ({pause.reason})"


def _log_change(before: RateLimitPause | None, after: RateLimitPause, now: str) -> None:
    if after.until > now:
        log.warning(
            "non-urgent Codat calls %s",
            describe(after),
            extra={"paused_until": after.until, "since": after.since, "reason": after.reason},
        )
    elif before is not None:
        log.info("Codat's rate limit is reset: non-urgent calls resume", extra={"at": now})

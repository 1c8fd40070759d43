"""What recent webhooks tell about the endpoint: counts by outcome, and a wrong secret noticed.

A wrong but well-formed `CODAT_WEBHOOK_SECRET` makes every delivery a 401 while the store is
fine; Codat retries for a day and disables the endpoint after five. When, over the last
`window` seconds, no webhook was accepted and at least `threshold` were refused for their
signature or timestamp, `/healthz` says `degraded` with the reason. It says so too while
Codat's rate limit pauses the non-urgent calls (`paused`: the pause the worker last read).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from processor import clock
from processor.intake.signature import SIGNATURE, TIMESTAMP
from store import RateLimitPause

DEFAULT_WINDOW_SECONDS = 600.0
DEFAULT_THRESHOLD = 5


@dataclass
class WebhookHealth:
    """Counts webhooks by outcome; says when the recent ones were all refused as not authentic."""

    window: float = DEFAULT_WINDOW_SECONDS
    threshold: int = DEFAULT_THRESHOLD
    clock: Callable[[], float] = time.monotonic
    outcomes: Counter[str] = field(default_factory=Counter)
    paused: Callable[[], RateLimitPause | None] = lambda: None
    _last_accepted: float | None = None
    _refusals: deque[tuple[float, str]] = field(default_factory=deque)
    # Outcomes per minute over the last hour, for the dashboard: (minute, counts) each.
    _minutes: deque[tuple[int, Counter[str]]] = field(default_factory=deque)

    def accepted(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self._last_accepted = self.clock()
        self._tally(outcome, self._last_accepted)

    def rejected(self, reason: str) -> None:
        self.outcomes[f"rejected:{reason}"] += 1
        self._tally(f"rejected:{reason}", self.clock())
        if reason in (SIGNATURE, TIMESTAMP):
            self._refusals.append((self.clock(), reason))
            while len(self._refusals) > self.threshold:
                self._refusals.popleft()

    def last_hour(self) -> Counter[str]:
        """Outcomes of the last 60 minutes (whole minutes: up to a minute more)."""
        oldest = int(self.clock() // 60) - 59
        total: Counter[str] = Counter()
        for minute, counts in self._minutes:
            if minute >= oldest:
                total.update(counts)
        return total

    def _tally(self, outcome: str, now: float) -> None:
        minute = int(now // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, Counter()))
            while self._minutes[0][0] < minute - 59:
                self._minutes.popleft()
        self._minutes[-1][1][outcome] += 1

    def degraded(self) -> str | None:
        """Why the endpoint looks misconfigured or Codat's calls are paused, or None."""
        reasons = [reason for reason in (self._refused(), self._rate_limited()) if reason]
        return "; ".join(reasons) or None

    def _rate_limited(self) -> str | None:
        pause = self.paused()
        if pause is None or pause.until <= clock.now():
            return None
        return (
            f"Codat's rate limit pauses reconciliation, option refreshes and sync look-ups "
            f"until {pause.until} (since {pause.since}: {pause.reason}); partner expense "
            "connections are still created"
        )

    def _refused(self) -> str | None:
        now = self.clock()
        if self._last_accepted is not None and now - self._last_accepted <= self.window:
            return None
        recent = [reason for at, reason in self._refusals if now - at <= self.window]
        if len(recent) < self.threshold:
            return None
        counts = Counter(recent)
        cause = (
            "check CODAT_WEBHOOK_SECRET against the signing secret in the Codat Portal"
            if counts[SIGNATURE] >= counts[TIMESTAMP]
            else "check this server's clock (NTP): timestamps are outside +-5 minutes"
        )
        return (
            f"at least {len(recent)} webhooks in the last {self.window:.0f} s were refused "
            f"({_joined(counts)}) and none was accepted: {cause}; Codat disables an endpoint "
            "that keeps failing"
        )


def _joined(counts: Counter[str]) -> str:
    return ", ".join(f"{count} for their {reason}" for reason, count in sorted(counts.items()))

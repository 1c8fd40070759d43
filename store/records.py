"""Plain records the store reads and writes: what crosses the boundary of `store/`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Event status as the store sees it.
STORED = "stored"
DUPLICATE_MESSAGE = "duplicate"
REQUEUED = "requeued"

# Effect statuses.
EFFECT_PENDING = "pending"
EFFECT_DONE = "done"
EFFECT_FAILED = "failed"
EFFECT_CANCELLED = "cancelled"
# The calls to Codat kept per company (older ones go as new ones are recorded).
CALLS_KEPT = 200


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended to the log."""

    message_id: str
    event_type: str
    body_format: str
    source: str
    generated_date: str
    received_at: str
    body: bytes
    headers: dict[str, str]
    fields: dict[str, Any]
    event_id: str | None = None
    company_id: str | None = None
    connection_id: str | None = None
    # Events that need no fold (no company) are stored already processed.
    outcome: str | None = None


@dataclass(frozen=True)
class InsertResult:
    """What appending one event did: stored, duplicate (already there) or requeued."""

    seq: int
    status: str


@dataclass(frozen=True)
class StoredEvent:
    """One row of the event log, without its raw body."""

    seq: int
    message_id: str
    event_id: str | None
    event_type: str
    body_format: str
    source: str
    company_id: str | None
    connection_id: str | None
    generated_date: str
    received_at: str
    fields: dict[str, Any]
    deliveries: int
    processed_at: str | None
    outcome: str | None
    duplicate_of: int | None = None


class LoggedEvent(NamedTuple):
    """One event of a company's log as a rebuild reads it: what the handlers and the outcomes
    need (a `StoredEvent` without its ids and deliveries, lighter to read by the million)."""

    seq: int
    event_type: str
    source: str
    company_id: str | None
    generated_date: str
    fields: dict[str, Any]
    processed_at: str | None
    outcome: str | None


@dataclass(frozen=True)
class Effect:
    """A side effect the state machine asked for, and what became of it."""

    id: int
    company_id: str
    kind: str
    connection_id: str | None
    idempotency_key: str
    caused_by: int | None
    status: str
    attempts: int
    next_attempt_at: str
    last_error: str | None
    result: dict[str, Any] | None
    created_at: str
    updated_at: str
    # When it was last put back in line after failing (`replay --failed`, a redelivery): its
    # retries have until the retry horizon from then, not from `created_at`.
    requeued_at: str | None = None
    # When the company's first intent of this kind since the last one done was opened (None
    # for that one done): an earlier one, cancelled or failed, may have made what this would.
    first_of_kind_at: str | None = None


@dataclass(frozen=True)
class CompanyRow:
    """A company's stored state: the projection of its event log."""

    company_id: str
    state: str
    data: dict[str, Any]
    updated_at: str
    checked_at: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of companies and the cursor of the next page, if any."""

    companies: list[CompanyRow] = field(default_factory=list)
    next_after: str | None = None


@dataclass(frozen=True)
class OptionsSnapshot:
    """The choices Codat offered for a company's expense configuration, as last fetched.

    `data` holds the mapping options (`expenseProvider`, `accounts`, `trackingCategories`,
    `taxRates`) and the `suppliers` and `customers` lists.
    """

    company_id: str
    fetched_at: str
    data: dict[str, Any]


@dataclass(frozen=True)
class SyncRow:
    """One expense sync of a company, as merged from every report about it.

    `data` is the merged record (handlers.syncs.SyncRecord as a dictionary); `at` and `outcome`
    are copied out of it for ordering.
    """

    company_id: str
    sync_id: str
    at: str
    outcome: str | None
    data: dict[str, Any]
    updated_at: str


@dataclass(frozen=True)
class SyncPage:
    """One page of a company's syncs, newest first, and the cursor of the next page, if any."""

    syncs: list[SyncRow] = field(default_factory=list)
    next_after: str | None = None


@dataclass(frozen=True)
class RateLimitPause:
    """Non-urgent calls to Codat held back, by every instance, until `until` (Codat's rate limit).

    `since` is when the pause began and `reason` says what began it (a `client.rateLimit.reached`
    webhook, a 429 answer); `notice_at` is the generatedDate of the newest rate-limit webhook
    taken into account (None: none yet).
    """

    until: str
    since: str
    reason: str
    notice_at: str | None = None


@dataclass(frozen=True)
class CodatCall:
    """One HTTP call to Codat about a company, as the processor sent it: the operation (method
    and path with ids replaced), the status (`200`, `timeout`, `connection_error`), how long it
    took, and Codat's correlationId on an error answer."""

    company_id: str
    at: str
    operation: str
    status: str
    duration_ms: float
    correlation_id: str | None = None
    error: str | None = None

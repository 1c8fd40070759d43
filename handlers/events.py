"""The internal events the onboarding state machine understands, as frozen dataclasses.

Webhook bodies (current envelope or legacy) and the results of our own Codat calls are all mapped
to these before they reach a handler, so one fold serves live processing, replay and rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from handlers.syncs import SyncReport


class ConnectionStatus(StrEnum):
    """A connection's status in Codat, as its API spells it."""

    PENDING_AUTH = "PendingAuth"
    LINKED = "Linked"
    UNLINKED = "Unlinked"
    DEAUTHORIZED = "Deauthorized"


class SourceType(StrEnum):
    """The kinds of connection onboarding tells apart, as Codat's API spells them."""

    ACCOUNTING = "Accounting"
    EXPENSE = "Expense"


@dataclass(frozen=True)
class Connection:
    """A snapshot of one Codat data connection, as an event carried it."""

    id: str
    status: str
    platform_key: str | None = None
    platform_name: str | None = None
    source_type: str | None = None  # None: legacy bodies do not say


@dataclass(frozen=True)
class Event:
    """One stored event, reduced to what the handlers need.

    `generated_date` is a normalised UTC ISO 8601 string (sortable as text).
    """

    event_type: str
    company_id: str
    generated_date: str
    company_name: str | None = None
    connection: Connection | None = None
    error: str | None = None
    source: str = "webhook"
    # Named values an event carries besides a connection: the expense sync configuration
    # observed in Codat ({"bankAccount", "supplier", "customer"}: ids, absent when not set).
    details: dict[str, str] = field(default_factory=dict)
    # Every connection a data read covered (`read.completed`); `connection` holds the first.
    connection_ids: tuple[str, ...] = ()
    # What the event says about one expense sync (sync webhooks, Codat's status answers).
    sync: SyncReport | None = None

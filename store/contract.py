"""The store's contract: what the code outside `store/` may ask of any backend.

Each protocol is one concern; a consumer that needs less can say so in its annotations. Every
backend (`store/sqlite/`, `store/postgres/`) implements them all; the contract tests run
against each. Several processes may share one store (several `serve` instances on PostgreSQL,
a command-line tool beside `serve` on either): the locks below keep them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from store.records import (
    CodatCall,
    CompanyRow,
    Effect,
    InsertResult,
    LoggedEvent,
    NewEvent,
    OptionsSnapshot,
    Page,
    RateLimitPause,
    StoredEvent,
    SyncPage,
    SyncRow,
)


class EventLog(Protocol):
    """Every webhook and synthetic event, in order of receipt."""

    def append_events(self, events: Sequence[NewEvent]) -> list[InsertResult]:
        """Append events; a known message id or event id is a duplicate, not a second row."""
        ...

    def pending_company_ids(self, limit: int = 1000) -> list[str]:
        """Companies with events not yet folded into their state."""
        ...

    def pending_events(self, company_id: str) -> list[StoredEvent]:
        """A company's unfolded events, oldest generatedDate first."""
        ...

    def pending_events_of(self, company_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """`pending_events` of several companies at once (every one a key, maybe empty)."""
        ...

    def folded_events(self, company_id: str) -> list[StoredEvent]:
        """A company's folded events, in the order they were folded (for rebuilds)."""
        ...

    def company_events(self, company_id: str, limit: int = 500) -> list[StoredEvent]:
        """A company's events in order of receipt, newest last."""
        ...

    def event(self, seq: int) -> StoredEvent | None: ...

    def find_events(
        self,
        *,
        company_id: str | None = None,
        event_or_message_id: str | None = None,
        since: str | None = None,
        event_type: str | None = None,
        failed: bool = False,
    ) -> list[StoredEvent]:
        """Events matching every given criterion, in order of receipt."""
        ...

    def count_matching(
        self,
        *,
        company_id: str | None = None,
        event_or_message_id: str | None = None,
        since: str | None = None,
        event_type: str | None = None,
        failed: bool = False,
    ) -> tuple[int, int]:
        """How many events match every given criterion (as `find_events`), and of how many
        companies."""
        ...

    def matching_companies(
        self,
        *,
        company_id: str | None = None,
        event_or_message_id: str | None = None,
        since: str | None = None,
        event_type: str | None = None,
        failed: bool = False,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Companies with an event matching every criterion, by id: the first `limit` after
        `after` (a page; the last id of one is the next one's `after`)."""
        ...

    def raw_event(self, seq: int) -> tuple[bytes, dict[str, str]] | None:
        """The raw body and headers of an event, as received (to re-verify or re-parse)."""
        ...

    def mark_folded(self, outcomes: Sequence[tuple[int, str]], now: str) -> None:
        """Record that events were folded, in this order, with these outcomes."""
        ...

    def set_outcomes(self, outcomes: Sequence[tuple[int, str]]) -> None:
        """Rewrite outcomes after a rebuild, keeping the fold order."""
        ...

    def count_events(self, *, pending: bool = False) -> int: ...

    def oldest_pending_received_at(self) -> str | None:
        """When the oldest event not yet folded was received (None: nothing is waiting)."""
        ...

    def event_types(self) -> list[str]:
        """Every event type in the log, sorted."""
        ...


class CompanyStates(Protocol):
    """The state each company's events fold into, and the queries over it."""

    def company(self, company_id: str) -> CompanyRow | None: ...

    def companies_of(self, company_ids: Sequence[str]) -> dict[str, CompanyRow]:
        """The stored states of these companies, by id (those without one are left out)."""
        ...

    def save_company(self, company_id: str, state: str, data: dict[str, Any], now: str) -> None: ...

    def save_companies(self, states: Sequence[tuple[str, str, dict[str, Any]]], now: str) -> None:
        """`save_company` for several: (company id, state, data) each."""
        ...

    def mark_checked(self, company_id: str, now: str) -> None: ...

    def delete_company_state(self, company_id: str) -> None: ...

    def companies(self, *, state: str | None, limit: int, after: str | None) -> Page:
        """A page of companies ordered by id, optionally in one state."""
        ...

    def company_ids(self) -> list[str]:
        """Every company that has an event or a state."""
        ...

    def knows_company(self, company_id: str) -> bool:
        """Whether the store has a state or any event for this company."""
        ...

    def companies_named(self, name: str) -> list[str]:
        """Ids of the stored companies with exactly this name."""
        ...

    def state_counts(self) -> dict[str, int]: ...


class EffectRecord(Protocol):
    """Intents to call Codat: one open per company and kind, claimed by one worker at a time."""

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
        ...

    def effect(self, effect_id: int) -> Effect | None: ...

    def open_effects(self, company_id: str) -> list[Effect]: ...

    def open_effects_of(self, company_ids: Sequence[str]) -> dict[str, list[Effect]]:
        """`open_effects` of several companies at once, oldest first (every one a key)."""
        ...

    def company_effects(self, company_id: str) -> list[Effect]: ...

    def failed_effects(self) -> list[Effect]: ...

    def due_effects(self, now: str, limit: int = 100) -> list[Effect]:
        """Pending effects whose next attempt is due and that no live worker has claimed."""
        ...

    def next_effect_due(self) -> str | None: ...

    def claim_effect(self, effect_id: int, owner: str, until: str, now: str) -> bool:
        """Take an effect for one attempt; False if another worker holds it or it is closed."""
        ...

    def claim_owners(self) -> list[str]:
        """Owners of the claims not released yet (expired ones included)."""
        ...

    def release_claims(self, owner: str) -> int:
        """Release every claim of an owner known to be dead, so its work need not wait."""
        ...

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
        """Close a pending effect: done, failed (a dead letter) or cancelled. False, and nothing
        changed, when it is no longer pending (another process closed it meanwhile: a late
        attempt does not overwrite how it ended), but its claim, which ends if `owner` (the
        attempt's claimant, when given) still holds it."""
        ...

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
        """Count a failed attempt of a pending effect and schedule the next one. False when it
        is no longer pending (closed while the attempt ran): then nothing changes but its
        claim, if `owner` (the attempt's claimant, when given) still holds it: it ends, or with
        `hold_until` (an attempt that got no answer, which Codat may still act on) lasts until
        then at most, keeping its replacement waiting."""
        ...

    def requeue_effect(self, effect_id: int, now: str) -> bool:
        """Put a failed effect back in line, unless another one is already open for it."""
        ...

    def close_effect(self, effect_id: int, status: str, now: str) -> None:
        """Close an open effect the state no longer calls for (cancelled)."""
        ...


class ExpenseOptions(Protocol):
    """The choices Codat offers for each company's expense configuration, as last fetched."""

    def save_options(self, company_id: str, data: dict[str, Any], now: str) -> None:
        """Replace the company's snapshot with `data`, fetched `now`."""
        ...

    def options(self, company_id: str) -> OptionsSnapshot | None:
        """The company's last snapshot; None if its choices were never fetched."""
        ...


class ExpenseSyncs(Protocol):
    """Every expense sync Codat reported for each company, one row per sync."""

    def sync_rows(self, company_id: str, sync_ids: Sequence[str]) -> dict[str, SyncRow]:
        """The company's rows of these syncs, by sync id (unknown ones left out)."""
        ...

    def save_syncs(
        self,
        company_id: str,
        syncs: Sequence[tuple[str, str, str | None, dict[str, Any]]],
        now: str,
    ) -> None:
        """Insert or replace rows: (sync id, at, outcome, data) each."""
        ...

    def syncs(self, company_id: str, *, limit: int, after: str | None = None) -> SyncPage:
        """A page of the company's syncs, newest `at` first; `after` is a page's cursor."""
        ...


class RateLimits(Protocol):
    """The pause of non-urgent calls to Codat while its rate limit lasts, shared by instances."""

    def rate_limit_pause(self, now: str | None = None) -> RateLimitPause | None:
        """The pause in force at `now` (None when there is none); without `now`, the stored
        pause even if it is over."""
        ...

    def save_rate_limit_pause(self, pause: RateLimitPause, now: str) -> None:
        """Replace the stored pause."""
        ...

    def newest_rate_limit_notice(self) -> StoredEvent | None:
        """The newest `client.rateLimit.reached`/`reset` webhook by generatedDate, if any."""
        ...


class SyncChecks(Protocol):
    """When reconciliation last read each company's latest sync status from Codat."""

    def sync_checks(self, company_ids: Sequence[str]) -> dict[str, str]:
        """When each of these companies' syncs were last checked (never-checked ones left out)."""
        ...

    def mark_sync_checked(self, company_id: str, now: str) -> None: ...


class DashboardReads(Protocol):
    """What the dashboard reads beyond the query API: each one indexed query, bounded by a
    page (`limit`, walked by keyset) or a count that stops at `cap`."""

    def state_counts(self) -> dict[str, int]: ...

    def companies_newest(
        self, *, state: str | None, limit: int, before: tuple[str, str] | None = None
    ) -> list[CompanyRow]:
        """Companies, latest change first, optionally in one state; `before` is the
        (updated_at, company_id) of the previous page's last row."""
        ...

    def search_companies(self, text: str, *, state: str | None, limit: int) -> list[CompanyRow]:
        """Companies whose id starts with `text`, then those whose name does (ASCII letters
        in any case): at most `limit` of each."""
        ...

    def companies_unchanged_since(self, state: str, before: str, *, limit: int) -> list[CompanyRow]:
        """Companies in `state` whose row last changed before `before`, oldest first."""
        ...

    def count_unchanged_since(self, state: str, before: str, *, cap: int) -> int: ...

    def recent_failed_effects(self, *, limit: int) -> list[Effect]:
        """Commands that failed for good, latest failure first."""
        ...

    def count_failed_effects(self, *, cap: int) -> int: ...

    def failing_syncs(self, *, limit: int) -> list[CompanyRow]:
        """Companies whose newest expense sync failed, latest first."""
        ...

    def count_failing_syncs(self, *, cap: int) -> int: ...

    def silent_syncs(self, before: str, *, limit: int) -> list[CompanyRow]:
        """Configured companies with no expense sync (nor configuration read) since `before`
        and whose newest sync did not fail, longest silent first."""
        ...

    def count_silent_syncs(self, before: str, *, cap: int) -> int: ...


class ReplayReads(Protocol):
    """What a replay reads of each batch of companies: lean, for millions of events."""

    def replay_logs_of(
        self, company_ids: Sequence[str], *, key_range: bool = False
    ) -> dict[str, tuple[list[LoggedEvent], list[LoggedEvent]]]:
        """Each company's log for a rebuild (every one a key), as `LoggedEvent`s: its folded
        events in the order they were folded (`folded_events`), and its pending ones
        (`pending_events`).

        `key_range` changes how, not what: the ids are read as one range, from the least to
        the greatest (byte order), the rows of other companies in it skipped. Faster when few
        other companies lie in that range (a page of every company, as a full replay reads)."""
        ...

    def replay_states_of(
        self, company_ids: Sequence[str], *, key_range: bool = False
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """The state and data of each of these companies that has one (as `companies_of`,
        without the rest of the row); `key_range` as for `replay_logs_of`."""
        ...

    def states_of(self, company_ids: Sequence[str]) -> dict[str, str]:
        """The onboarding state of each of these companies that has one (as `companies_of`
        without the data)."""
        ...

    def commits_elsewhere(self) -> int | None:
        """A number that changes when another connection commits to the store, and only then
        (not for this connection's own commits); None where the backend cannot tell
        (PostgreSQL). Equal before and inside a transaction: no one else wrote in between."""
        ...


class CodatCalls(Protocol):
    """The calls made to Codat about each company (the newest CALLS_KEPT of each are kept)."""

    def record_codat_calls(self, calls: Sequence[CodatCall]) -> None:
        """Append these calls; older calls of the same companies beyond CALLS_KEPT go."""
        ...

    def codat_calls(self, company_id: str, limit: int = 200) -> list[CodatCall]:
        """The company's newest `limit` calls, oldest first."""
        ...


class Store(
    CodatCalls,
    EventLog,
    CompanyStates,
    EffectRecord,
    ExpenseOptions,
    ExpenseSyncs,
    RateLimits,
    SyncChecks,
    DashboardReads,
    ReplayReads,
    Protocol,
):
    """A whole store: its concerns, in transactions."""

    readonly: bool
    # Statements wait on a server (PostgreSQL): run them off the event loop. SQLite's are CPU
    # work, cheaper on the loop than in a thread that waits for the GIL.
    remote: bool

    def transaction(self) -> AbstractContextManager[Store]:
        """One write transaction; nested calls join the outer one."""
        ...

    def try_begin(self) -> bool:
        """Start a write transaction if the write lock is free now; False if not."""
        ...

    def begin(self) -> None:
        """Start a write transaction, waiting up to the busy timeout (blocking)."""
        ...

    def commit(self) -> None:
        """Commit: durable when it returns (blocking); rolled back if it fails."""
        ...

    def rollback(self) -> None:
        """Undo the open transaction, if any."""
        ...

    def read_snapshot(self) -> AbstractContextManager[Store]:
        """Reads in the block see one moment of the store (joins an open transaction)."""
        ...

    def savepoint(self) -> AbstractContextManager[Store]:
        """A nested unit inside a transaction, undone alone if it fails."""
        ...

    def lock_company(self, company_id: str, *, wait: bool = False) -> bool:
        """In a transaction: take the company's fold lock until it ends; False if another
        transaction holds it (with `wait`, wait for it up to the lock timeout instead).

        A company's events are folded by one transaction at a time, whichever instance runs it.
        """
        ...

    def lock_companies(self, company_ids: Sequence[str]) -> list[str]:
        """`lock_company` (not waiting) for several at once: those this transaction got."""
        ...

    def lock_task(self, name: str) -> bool:
        """Take a task's lock (the reconciliation sweep) unless another instance holds it; it
        lasts until `unlock_task`, or until this store's connection ends (a crash)."""
        ...

    def unlock_task(self, name: str) -> None: ...

    def heartbeat(self, now: str) -> None:
        """A one-row write: proves the store can still commit."""
        ...

    def ping(self) -> None:
        """Raise StoreError unless the store answers a query."""
        ...

    def close(self) -> None: ...


class WorkerReads(Protocol):
    """What the worker reads outside its transactions: what to fold, what to carry out."""

    remote: bool

    def pending_company_ids(self, limit: int = 1000) -> list[str]: ...

    def due_effects(self, now: str, limit: int = 100) -> list[Effect]: ...

    def next_effect_due(self) -> str | None: ...

    def rate_limit_pause(self, now: str | None = None) -> RateLimitPause | None: ...

    def newest_rate_limit_notice(self) -> StoredEvent | None: ...


class Queries(Protocol):
    """What the read-only query API and the status documents read."""

    def read_snapshot(self) -> AbstractContextManager[Queries]: ...

    def company(self, company_id: str) -> CompanyRow | None: ...

    def companies(self, *, state: str | None, limit: int, after: str | None) -> Page: ...

    def company_events(self, company_id: str, limit: int = 500) -> list[StoredEvent]: ...

    def codat_calls(self, company_id: str, limit: int = 200) -> list[CodatCall]: ...

    def company_effects(self, company_id: str) -> list[Effect]: ...

    def options(self, company_id: str) -> OptionsSnapshot | None: ...

    def syncs(self, company_id: str, *, limit: int, after: str | None = None) -> SyncPage: ...

    def rate_limit_pause(self, now: str | None = None) -> RateLimitPause | None: ...

    def ping(self) -> None: ...


class ReaderPool(Protocol):
    """Read-only stores for queries running in several threads at once."""

    def reading(self) -> AbstractContextManager[Store]:
        """A read-only store for the time of the block (this thread's, or one from a pool)."""
        ...

    def close(self) -> None: ...

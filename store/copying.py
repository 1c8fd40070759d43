"""Copying a whole store into an empty one: the backend-neutral loop of `store copy`.

Each backend implements `Copyable` (store/sqlite/copying.py, store/postgres/copying.py): read a
table's rows in key order after a key, insert rows exactly as read (keys included), count, and
finish (PostgreSQL moves its identity sequences past the copied keys). The loop here reads the
source in one read snapshot and writes the target in batches, one transaction each.

What is copied: every column of `events` (raw body and headers, `seq`, fold order, outcomes;
Codat's rate-limit notices are events too), `companies`, `expense_options`, `effects` (ids
kept), `expense_syncs`, `sync_checks` (when reconciliation last read each company's syncs) and
`rate_limit_pause` (the pause in force, which a 429 may have begun without any notice) and
`codat_calls` (the newest calls to Codat about each company), with the
claims on effects cleared (their holders belong to the old deployment). `heartbeat` and
`schema_migrations` are the target's own; `company_state_counts` is kept by the target's own
triggers as the companies are inserted (NOT_COPIED).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

from store.contract import Store
from store.errors import StoreBehind, StoreError
from store.opening import describe_url, missing_store, open_store

# The tables copied, in an order that keeps every reference to an earlier row (effects name
# the event that caused them; a duplicate event names an earlier one).
TABLES = (
    "events",
    "companies",
    "effects",
    "expense_options",
    "expense_syncs",
    "sync_checks",
    "rate_limit_pause",
    "codat_calls",
)
KEYS = {
    "events": "seq",
    "companies": "company_id",
    "effects": "id",
    "expense_options": "company_id",
    "expense_syncs": "key",
    "sync_checks": "company_id",
    "rate_limit_pause": "id",
    "codat_calls": "id",
}
NOT_COPIED = {
    "heartbeat": "the target's own: written by the processes that use it",
    "schema_migrations": "the target's own: its migrations, applied when it was opened",
    "company_state_counts": "derived: the target's triggers count the companies inserted",
}
"""The schema's other tables, and why each is left out (tests hold TABLES and these to the
schema, so a table a migration adds is copied or named here)."""
COLUMNS: dict[str, tuple[str, ...]] = {
    "events": (
        "seq",
        "message_id",
        "event_id",
        "event_type",
        "body_format",
        "source",
        "company_id",
        "connection_id",
        "generated_date",
        "received_at",
        "fields",
        "body",
        "headers",
        "deliveries",
        "last_delivered_at",
        "duplicate_of",
        "processed_at",
        "fold_order",
        "outcome",
    ),
    "companies": ("company_id", "state", "data", "updated_at", "checked_at"),
    "effects": (
        "id",
        "company_id",
        "kind",
        "connection_id",
        "idempotency_key",
        "caused_by",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "result",
        "claimed_by",
        "claim_expires_at",
        "created_at",
        "updated_at",
        "requeued_at",
    ),
    # The snapshot of each company's configuration choices (`codat-expenses options`).
    "expense_options": ("company_id", "fetched_at", "data"),
    # Every expense sync reported for each company (`codat-expenses syncs`).
    "expense_syncs": ("key", "company_id", "sync_id", "at", "outcome", "data", "updated_at"),
    # When reconciliation last read each company's sync status (at most once a day each).
    "sync_checks": ("company_id", "checked_at"),
    # Codat's rate-limit pause shared by every instance (one row, id 1).
    "rate_limit_pause": ("id", "paused_until", "since", "reason", "notice_at", "updated_at"),
    # The newest calls to Codat about each company (its timeline).
    "codat_calls": (
        "id",
        "company_id",
        "at",
        "operation",
        "status",
        "duration_ms",
        "correlation_id",
        "error",
    ),
}
CLEARED = {"effects": ("claimed_by", "claim_expires_at")}
"""Columns copied as NULL: claims held by processes of the deployment being moved."""

BATCH = 2000

Row = tuple[Any, ...]


@runtime_checkable
class Copyable(Protocol):
    """What a backend offers `store copy`, on top of the contract."""

    def copy_snapshot(self) -> AbstractContextManager[None]:
        """One read snapshot for the whole block: batches read one consistent store."""
        ...

    def copy_rows(self, table: str, after: Any, limit: int) -> list[Row]:
        """Up to `limit` rows of `table` whose key is above `after` (None: from the first), in
        key order, as tuples in `COLUMNS[table]` order; bytes for the raw body."""
        ...

    def insert_copied(self, table: str, rows: Sequence[Row]) -> None:
        """Insert rows as read by `copy_rows`, keys included (in the caller's transaction)."""
        ...

    def count_rows(self, table: str) -> int: ...

    def finish_copy(self) -> None:
        """After the last insert: new rows get keys above the copied ones."""
        ...


class CopyStore(Store, Copyable, Protocol):
    """A store that can be copied from and into."""


@dataclass
class CopyResult:
    """What a copy did: rows per table, and how long it took."""

    copied: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class TargetNotEmpty(Exception):
    """The target already holds rows: `found` per table."""

    def __init__(self, where: str, found: dict[str, int], *, version: int | None = None) -> None:
        listed = ", ".join(f"{count} {table}" for table, count in found.items() if count)
        holds = (
            f"an earlier codat-expenses wrote it (schema version {version})"
            if version is not None
            else f"it holds {listed}"
        )
        super().__init__(
            f"the target, {where}, is not empty: {holds}; store copy only copies into an empty "
            "store"
        )
        self.found = found


def copyable(store: Store) -> CopyStore:
    """The store as a `CopyStore`; every backend is one."""
    if not isinstance(store, Copyable):  # pragma: no cover - every backend implements it
        raise StoreError(f"the {type(store).__name__} backend cannot be copied")
    return cast(CopyStore, store)


def open_source(url: str, *, timeout: float = 5.0) -> CopyStore:
    """The store to copy from, read-only; StoreError if it does not exist."""
    missing = missing_store(url)
    if missing is not None:
        raise StoreError(f"the source {missing.removesuffix(' (check DATABASE_URL)')}")
    return copyable(open_store(url, readonly=True, timeout=timeout))


def counts(store: CopyStore) -> dict[str, int]:
    """Rows per copied table."""
    return {table: store.count_rows(table) for table in TABLES}


def open_empty_target(url: str, *, timeout: float = 5.0) -> CopyStore:
    """The store to copy into, created and migrated if need be; TargetNotEmpty, with nothing
    written, if it holds a row in any copied table."""
    if missing_store(url) is None:
        # Looked at read-only first, so a target that is refused is not written to at all. A
        # database without the tables (or that cannot be read) is left to the writer's open,
        # which creates them or says why it cannot.
        try:
            probe = copyable(open_store(url, readonly=True, timeout=timeout))
        except StoreBehind as behind:
            # Written by an earlier version: not empty, and not to be migrated to find out.
            raise TargetNotEmpty(describe_url(url), {}, version=behind.version) from None
        except StoreError:
            pass
        else:
            try:
                _refuse_unless_empty(probe, url)
            finally:
                probe.close()
    target = copyable(open_store(url, timeout=timeout))
    try:
        _refuse_unless_empty(target, url)  # someone else may have written in between
    except BaseException:
        target.close()
        raise
    return target


def _refuse_unless_empty(store: CopyStore, url: str) -> None:
    found = counts(store)
    if any(found.values()):
        raise TargetNotEmpty(describe_url(url), found)


def copy_all(
    source: CopyStore,
    target: CopyStore,
    *,
    batch: int = BATCH,
    progress: Callable[[str, int], Any] = lambda table, rows: None,
) -> CopyResult:
    """Copy every table of `source` into the (empty) `target`, `batch` rows per transaction.

    `progress(table, rows)` is called after each batch is committed."""
    started = time.monotonic()
    result = CopyResult()
    with source.copy_snapshot():
        for table in TABLES:
            result.copied[table] = _copy_table(source, target, table, batch, progress)
    with target.transaction():
        target.finish_copy()
    result.seconds = time.monotonic() - started
    return result


def _copy_table(
    source: CopyStore,
    target: CopyStore,
    table: str,
    batch: int,
    progress: Callable[[str, int], Any],
) -> int:
    key = COLUMNS[table].index(KEYS[table])
    cleared = [COLUMNS[table].index(name) for name in CLEARED.get(table, ())]
    after: Any = None
    copied = 0
    while True:
        rows = source.copy_rows(table, after, batch)
        if not rows:
            return copied
        if cleared:
            rows = [_clear(row, cleared) for row in rows]
        with target.transaction():
            target.insert_copied(table, rows)
        copied += len(rows)
        after = rows[-1][key]
        progress(table, len(rows))


def _clear(row: Row, indexes: list[int]) -> Row:
    return tuple(None if i in indexes else value for i, value in enumerate(row))

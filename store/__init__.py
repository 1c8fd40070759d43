"""The store: the event log, company state and the record of effects; the only place with SQL.

Code outside `store/` imports this package only: the records, the contract (`Store` and the
narrower views each consumer needs) and `open_store(url)`, which picks the backend.
"""

from store.contract import (
    CompanyStates,
    DashboardReads,
    EffectRecord,
    EventLog,
    ExpenseOptions,
    ExpenseSyncs,
    Queries,
    RateLimits,
    ReaderPool,
    Store,
    SyncChecks,
    WorkerReads,
)
from store.errors import StoreError, is_unavailable
from store.opening import (
    check_url,
    describe_url,
    missing_store,
    open_readers,
    open_store,
    sqlite_path,
)
from store.records import (
    EFFECT_CANCELLED,
    EFFECT_DONE,
    EFFECT_FAILED,
    EFFECT_PENDING,
    CompanyRow,
    Effect,
    InsertResult,
    NewEvent,
    OptionsSnapshot,
    Page,
    RateLimitPause,
    StoredEvent,
    SyncPage,
    SyncRow,
)

__all__ = [
    "EFFECT_CANCELLED",
    "EFFECT_DONE",
    "EFFECT_FAILED",
    "EFFECT_PENDING",
    "CompanyRow",
    "CompanyStates",
    "DashboardReads",
    "Effect",
    "EffectRecord",
    "EventLog",
    "ExpenseOptions",
    "ExpenseSyncs",
    "InsertResult",
    "NewEvent",
    "OptionsSnapshot",
    "Page",
    "Queries",
    "RateLimitPause",
    "RateLimits",
    "ReaderPool",
    "Store",
    "StoreError",
    "StoredEvent",
    "SyncChecks",
    "SyncPage",
    "SyncRow",
    "WorkerReads",
    "check_url",
    "describe_url",
    "is_unavailable",
    "missing_store",
    "open_readers",
    "open_store",
    "sqlite_path",
]

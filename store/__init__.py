"""The SQLite store: event log, company state, record of effects. The only place with SQL."""

from store.database import Store, StoreError
from store.records import (
    EFFECT_CANCELLED,
    EFFECT_DONE,
    EFFECT_FAILED,
    EFFECT_PENDING,
    CompanyRow,
    Effect,
    InsertResult,
    NewEvent,
    Page,
    StoredEvent,
)

__all__ = [
    "EFFECT_CANCELLED",
    "EFFECT_DONE",
    "EFFECT_FAILED",
    "EFFECT_PENDING",
    "CompanyRow",
    "Effect",
    "InsertResult",
    "NewEvent",
    "Page",
    "Store",
    "StoreError",
    "StoredEvent",
]

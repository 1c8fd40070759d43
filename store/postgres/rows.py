"""PostgreSQL rows to the store's records, and the columns they are read from.

The columns and conversions are SQLite's (`store/sqlite/rows.py`): the JSON columns are TEXT in
both, so both backends hand out equal records.
"""

from __future__ import annotations

from store.sqlite.rows import (
    COMPANY_COLUMNS,
    EFFECT_COLUMNS,
    EVENT_COLUMNS,
    company_row,
    dumps,
    effect,
    json_or_none,
    loads,
    stored_event,
)

__all__ = [
    "COMPANY_COLUMNS",
    "EFFECT_COLUMNS",
    "EVENT_COLUMNS",
    "company_row",
    "dumps",
    "effect",
    "json_or_none",
    "loads",
    "stored_event",
]

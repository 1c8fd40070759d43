"""Copies of frozen records with some fields changed (`dataclasses.replace`), and new records
built from every field (`cls(**values)`): the same records, faster.

A fold makes a few copies of the company's state per event; `dataclasses.replace` builds each
through `__init__` (a frozen dataclass sets every field with `object.__setattr__`), which made
it the largest cost of a replay. For a plain frozen dataclass (every field set by `__init__`, no
`__post_init__`, no slots) the copy of its attributes with the changes applied is the same
record, and costs a fraction of that.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

T = TypeVar("T")

# Per class: the names of its fields, or None when it is not a plain dataclass (replace then).
_FIELDS: dict[type, frozenset[str] | None] = {}


def evolve(record: T, **changes: Any) -> T:
    """`dataclasses.replace(record, **changes)`: a copy of `record` with these fields changed."""
    cls = type(record)
    try:
        names = _FIELDS[cls]
    except KeyError:
        names = _FIELDS[cls] = _plain_fields(cls)
    if names is None or not names.issuperset(changes):
        # Not a plain dataclass, or a name it has no field for (replace says which).
        return dataclasses.replace(record, **changes)  # type: ignore[type-var]
    copy = object.__new__(cls)
    copy.__dict__.update(record.__dict__, **changes)
    return copy


def build(cls: type[T], values: dict[str, Any]) -> T:
    """`cls(**values)` where `values` names every field of `cls`: the same record, without the
    `object.__setattr__` per field of a frozen dataclass's `__init__` (a third of the time).

    Anything else (a field left to its default, a name that is no field, not a plain
    dataclass) is built by `cls(**values)`, which fills the defaults or says what is wrong.
    """
    try:
        names = _FIELDS[cls]
    except KeyError:
        names = _FIELDS[cls] = _plain_fields(cls)
    if names is None or len(values) != len(names) or not names.issuperset(values):
        return cls(**values)
    record = object.__new__(cls)
    record.__dict__.update(values)
    return record


def _plain_fields(cls: type) -> frozenset[str] | None:
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__slots__"):
        return None
    if hasattr(cls, "__post_init__"):
        return None
    if any(isinstance(v, functools.cached_property) for v in vars(cls).values()):
        return None  # a cached value in the instance's attributes would be copied stale
    fields = dataclasses.fields(cls)
    if any(not f.init for f in fields):
        return None
    return frozenset(f.name for f in fields)

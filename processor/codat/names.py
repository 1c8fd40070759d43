"""Company names as Codat keeps them: it silently strips every character outside
``A-Za-z0-9``, whitespace and ``-',&@.?!`` (CODAT.md), so "Acme (UK)" is stored as "Acme UK"."""

from __future__ import annotations

import re

# (The stand-in for Codat strips names with its own copy of the rule, processor/sandbox/errors.py,
# on purpose: a fake that shared our reading of Codat could not show it wrong.)
_DISALLOWED = re.compile(r"[^A-Za-z0-9\s\-',&@.?!]")


def kept_name(name: str) -> str:
    """`name` as Codat will store it."""
    return _DISALLOWED.sub("", name).strip()

"""Reading Codat's Connection JSON: the parts the state machine uses, as stored fields.

Intake reads connections out of webhook bodies; the worker, onboarding and reconciliation read
them out of Codat's answers. Both go through here, so a connection is read one way.
"""

from __future__ import annotations

from typing import Any

MAX_TEXT = 500


def connection_fields(connection: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Codat Connection the state machine uses."""
    return {
        "id": text(connection.get("id")),
        "status": text(connection.get("status")),
        "platform_key": text(connection.get("integrationKey") or connection.get("platformKey")),
        "platform_name": text(connection.get("platformName")),
        "source_type": text(connection.get("sourceType")),
    }


def text(value: Any) -> str | None:
    """A value as storable text, at most MAX_TEXT characters; None for nothing."""
    if value is None:
        return None
    found = value if isinstance(value, str) else str(value)
    return clean(found[:MAX_TEXT]) or None


def clean(found: str) -> str:
    """Text either store can store: lone surrogates (valid in JSON, not in UTF-8) and NUL
    characters (valid JSON as `\\u0000`, refused in PostgreSQL's text) become U+FFFD."""
    if "\x00" in found:
        found = found.replace("\x00", "\ufffd")
    if found.isascii():
        return found
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in found)

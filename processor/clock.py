"""Time as the processor writes it: UTC ISO 8601 with 7 fractional digits, sortable as text."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?)?",
    re.IGNORECASE | re.ASCII,
)


class InvalidDate(ValueError):
    """A date that is not ISO 8601."""


def now() -> str:
    return from_timestamp(time.time())


def format_datetime(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def from_timestamp(seconds: float) -> str:
    """`seconds` since the epoch in our form; the date and time of a second are formatted once
    (`now()` runs for every webhook, and strftime was most of its 10 us)."""
    micro = datetime.fromtimestamp(seconds, UTC).microsecond  # rounded as datetime rounds
    whole = round(seconds - micro / 1_000_000)
    if _second[0] != whole:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))]
    return f"{_second[1]}{micro:06d}0Z"


_second: list[object] = [None, ""]  # the last second formatted, and its text


def after(seconds: float, start: datetime | None = None) -> str:
    return format_datetime((start or datetime.now(UTC)) + timedelta(seconds=seconds))


def normalize(text: str) -> str:
    """Codat's dates (Z, an offset, or no zone meaning UTC; up to 7 digits) as our UTC form."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise InvalidDate(f"expected an ISO 8601 date such as 2023-09-06T09:13:35Z, found {text!r}")
    day, clock, fraction, zone = match.groups()
    clock = clock or "00:00:00"  # a date alone is its first instant, in UTC
    zone = "+00:00" if zone is None or zone.upper() == "Z" else zone
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}{zone}").astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidDate(f"expected a valid ISO 8601 date, found {text!r}: {error}") from error
    digits = (fraction or "")[:7].ljust(7, "0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + digits + "Z"


def parse(text: str) -> datetime:
    """Our own UTC form (or any ISO 8601 date) back to an aware datetime."""
    return datetime.fromisoformat(normalize(text)[:26] + "+00:00")

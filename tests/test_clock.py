"""Time as the processor writes it: the cached second of `from_timestamp` never shows."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from processor import clock


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_from_timestamp_writes_what_datetime_would(seconds: float) -> None:
    """Its second is formatted once and kept; each instant must still read as datetime reads
    it, rounding into the next second included."""
    expected = clock.format_datetime(datetime.fromtimestamp(seconds, UTC))
    assert clock.from_timestamp(seconds) == expected


def test_instants_in_one_second_and_across_seconds() -> None:
    base = 1_800_000_000
    for seconds in (base + 0.25, base + 0.9999996, base + 1.5, base + 0.0000004, base - 0.5):
        expected = clock.format_datetime(datetime.fromtimestamp(seconds, UTC))
        assert clock.from_timestamp(seconds) == expected
    assert clock.now().endswith("Z") and len(clock.now()) == len("2026-12-07T20:28:56.6343770Z")

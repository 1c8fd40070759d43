"""`Retry-After` from Codat, read as seconds to wait: a number of seconds or an HTTP date
(CODAT.md: "handle both"), never more than a day, never a value the dates computed from it
cannot hold. An "inf", a "1e20" or a date in year 9999 once made the retry and pause code raise
OverflowError: the 429 went unrecorded and the command was retried at every claim expiry."""

from __future__ import annotations

import email.utils

import pytest

from processor import clock
from processor.codat.client import MAX_RETRY_AFTER, retry_after_seconds

NOW = 1_765_100_000.0  # 2025-12-07


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(NOW + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("1e20", MAX_RETRY_AFTER),
        ("inf", MAX_RETRY_AFTER),
        ("-inf", 0.0),
        (http_date(90), 90.0),
        (http_date(-90), 0.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_within_a_day(
    value: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_the_longest_wait_is_a_date_we_can_write() -> None:
    assert clock.after(MAX_RETRY_AFTER) > clock.now()

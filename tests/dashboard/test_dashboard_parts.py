"""The dashboard's small parts: the last hour's webhook counts, the Older cursor, the stuck
thresholds as the form writes them."""

from __future__ import annotations

from processor.http.dashboard import duration
from processor.http.listing import decode_cursor, encode_cursor
from processor.intake.health import WebhookHealth
from store import CompanyRow

COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"


def test_the_last_hour_counts_whole_minutes_and_forgets_older_ones() -> None:
    now = [10_000.0 * 60]
    health = WebhookHealth(clock=lambda: now[0])
    health.accepted("stored")
    health.rejected("signature")
    now[0] += 30 * 60
    health.accepted("stored")
    health.accepted("duplicate")
    assert health.last_hour() == {"stored": 2, "duplicate": 1, "rejected:signature": 1}
    now[0] += 30 * 60
    # The first minute is now 60 minutes old: out of the window.
    assert health.last_hour() == {"stored": 1, "duplicate": 1}
    now[0] += 2 * 3600
    health.rejected("timestamp")
    assert health.last_hour() == {"rejected:timestamp": 1}
    assert health.outcomes["stored"] == 2  # the totals since start are kept as before


def test_the_older_cursor_round_trips_and_refuses_anything_else() -> None:
    row = CompanyRow(COMPANY, "ready", {}, "2026-11-24T10:02:00.1234567Z")
    assert decode_cursor(encode_cursor(row)) == (row.updated_at, COMPANY)
    for cursor in ("", "x", "bm90IGEgY3Vyc29y", encode_cursor(CompanyRow("a b", "s", {}, "t"))):
        assert decode_cursor(cursor) is None, cursor


def test_thresholds_are_written_as_the_stuck_form_reads_them() -> None:
    assert [duration(s) for s in (86400, 600, 3 * 86400, 90, 7200)] == [
        "24h",
        "10m",
        "3d",
        "90s",
        "2h",
    ]

"""Benchmark 3: intake throughput as the store grows, and bytes of database per stored event.

Rounds alternate `serve` on an empty SQLite store and on copies of generated stores already
holding N events (a fresh copy per run), driven by wrk as in benchmark 1.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.memory import PeakRss
from bench.serving import parse_wrk, start, stop, wrk_output
from bench.throughput import CONNECTIONS, checks

Measured = dict[str, float]


def size_per_event(database: Path) -> dict[str, float]:
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        body = conn.execute("SELECT AVG(LENGTH(body)) FROM events").fetchone()[0]
    return {
        "events": float(events),
        "bytes": float(pages * page_size),
        "bytes_per_event": pages * page_size / events,
        "body_bytes_per_event": float(body),
    }


def measure(
    folder: Path,
    requests: Path,
    secret: str,
    stores: dict[int, Path | None],
    *,
    rounds: int,
    seconds: float,
    refresh: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """`stores`: events already stored -> the generated store (None: start empty); `refresh`
    signs the requests anew when they are about to be too old."""
    results: dict[int, list[Measured]] = {size: [] for size in stores}
    for number in range(1, rounds + 1):
        for size, source in stores.items():
            database = folder / "growth.db"
            for leftover in folder.glob("growth.db*"):
                leftover.unlink()
            if source is not None:
                shutil.copyfile(source, database)
            os.sync()  # the copy's dirty pages written out before, not during, the run
            refresh()
            process, url = start("intake", folder, secret, database)
            try:
                with PeakRss(process.pid) as peak:
                    measured = parse_wrk(wrk_output(url, requests, CONNECTIONS, seconds))
            finally:
                stop(process)
            measured["peak_rss_mib"] = peak.mib
            with sqlite3.connect(database) as conn:
                total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            measured["stored"] = float(total - size)
            results[size].append(measured)
            print(f"  round {number} {size:>9} stored: {measured}", flush=True)
    median = {
        size: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for size, runs in results.items()
    }
    empty = median[min(median)]["rps"]
    return {
        "checks": checks({f"{size} stored": runs for size, runs in results.items()}),
        "rounds": {str(size): runs for size, runs in results.items()},
        "median": {str(size): m for size, m in median.items()},
        "ratio_to_empty": {str(size): m["rps"] / empty for size, m in median.items()},
    }

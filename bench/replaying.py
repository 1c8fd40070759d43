"""Benchmarks 5 and 7 (replay part): `codat-expenses replay` of a whole generated store.

The full replay (no selector) and `--dry-run` run as their own processes on a copy of the
store, beside a bare read of every row of the same table with Python's sqlite3: as the command
runs by default (helper processes plan the pages, one per CPU), and in one process. Peak memory
is the replay process's, its largest helper's, and their sum, sampled every 20 ms.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.memory import PeakRss
from processor.sandbox.sender import generate_secret


def measure(folder: Path, store: Path, events: int) -> dict[str, Any]:
    copy = folder / "replay.db"
    shutil.copyfile(store, copy)
    results: dict[str, Any] = {"events": events}
    results["bare_read"] = _bare_read(copy, events)
    # As `codat-expenses replay` runs by default (helper processes, one per CPU), and in one
    # process (REPLAY_PROCESSES=1), side by side.
    results["dry_run"] = _replay(folder, copy, events, ["--dry-run"])
    results["replay"] = _replay(folder, copy, events, [])
    results["dry_run_one_process"] = _replay(folder, copy, events, ["--dry-run"], processes=1)
    results["replay_one_process"] = _replay(folder, copy, events, [], processes=1)
    for name in ("bare_read", "dry_run", "replay", "dry_run_one_process", "replay_one_process"):
        print(f"  replay {name:10} {results[name]}", flush=True)
    return results


def _bare_read(database: Path, events: int) -> dict[str, float]:
    started = time.perf_counter()
    with sqlite3.connect(database) as conn:
        rows = sum(1 for _ in conn.execute("SELECT * FROM events"))
    seconds = time.perf_counter() - started
    assert rows == events, f"{rows} rows read, {events} expected"
    return {"seconds": seconds, "events_per_s": events / seconds}


def _replay(
    folder: Path, database: Path, events: int, options: list[str], *, processes: int = 0
) -> dict[str, float]:
    env = {
        "REPLAY_PROCESSES": str(processes),
        **os.environ,
        "CODAT_API_KEY": "bench",
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": generate_secret(),
        "DATABASE_URL": f"sqlite:///{database}",
    }
    command = [sys.executable, "-m", "processor", "replay", *options]
    log = (folder / f"replay{''.join(options)}.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    with PeakRss(process.pid) as peak:
        process.wait(timeout=3600)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"replay {options} exited {process.returncode}: see {log.name}")
    return {
        "seconds": seconds,
        "events_per_s": events / seconds,
        "peak_rss_mib": peak.mib,
        "peak_helper_rss_mib": peak.child_mib,
        "peak_total_rss_mib": peak.total_mib,
    }

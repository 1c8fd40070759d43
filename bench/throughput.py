"""Benchmarks 1, 2 and 7 (intake part): intake throughput beside the bare endpoint, latency at
half the peak rate, and the peak memory of `serve` while it takes the load.

Each round runs, one after the other: the bare endpoint at the main wrk setting and again with
twice the wrk threads and connections (if wrk were the bottleneck, the second would be faster),
`serve` on SQLite, `serve` on PostgreSQL, two `serve` on one PostgreSQL database (each driven by
its own wrk with half the connections and its own half of the requests, rates added). Every
intake run starts on a fresh database; afterwards every answered request must be in it and no
answer may be other than 2xx. Ratios are of medians of the same run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.memory import PeakRss
from bench.serving import parse_wrk, start, stop, wrk_command, wrk_output
from tests.pg_server import PostgresServer

THREADS, CONNECTIONS = 1, 32
Measured = dict[str, float]


def measure(
    folder: Path,
    requests: Path,
    secret: str,
    server: PostgresServer | None,
    *,
    rounds: int,
    seconds: float,
    refresh: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """`refresh` signs the requests anew when they are about to be too old."""
    runs: dict[str, Callable[[], Measured]] = {
        "bare": lambda: _bare(folder, requests, secret, seconds, THREADS, CONNECTIONS),
        "bare_2x_wrk": lambda: _bare(folder, requests, secret, seconds, 2 * THREADS, 64),
        "sqlite": lambda: _sqlite(folder, requests, secret, seconds),
    }
    if server is not None:
        runs["postgres_x1"] = lambda: _postgres(server, folder, [requests], secret, seconds)
        runs["postgres_x2"] = lambda: _postgres(
            server, folder, _split(requests, folder), secret, seconds
        )
    results: dict[str, list[Measured]] = {name: [] for name in runs}
    for number in range(1, rounds + 1):
        for name, run in runs.items():
            refresh()
            results[name].append(run())
            print(f"  round {number} {name:12} {_short(results[name][-1])}", flush=True)
    summary: dict[str, Any] = {
        "method": (
            f"wrk -t{THREADS} -c{CONNECTIONS} -d{seconds:g}s, distinct pre-signed company.created "
            f"bodies (~1 KB); {rounds} rounds, each running bare, bare with wrk -t2 -c64, "
            "SQLite, PostgreSQL x1, PostgreSQL x2 in turn; fresh database per run; medians"
        ),
        "rounds": results,
        "median": {name: _median(values) for name, values in results.items()},
    }
    bare = summary["median"]["bare"]["rps"]
    summary["ratio"] = {name: m["rps"] / bare for name, m in summary["median"].items()}
    summary["checks"] = checks(results)
    refresh()
    summary["half_rate"] = {
        "sqlite": _half(summary, "sqlite", lambda d: _sqlite(folder, requests, secret, seconds, d)),
    }
    if server is not None:
        summary["half_rate"]["postgres_x1"] = _half(
            summary,
            "postgres_x1",
            lambda d: _postgres(server, folder, [requests], secret, seconds, d),
        )
    summary["checks"] += checks({f"half rate {k}": [v] for k, v in summary["half_rate"].items()})
    return summary


def _half(summary: dict[str, Any], name: str, run: Callable[[float], Measured]) -> Measured:
    """Latency with each connection pausing between requests so that about half the peak rate
    is offered (each request takes its pause plus its latency, so a little less is reached)."""
    rate = summary["median"][name]["rps"] / 2
    measured = run(CONNECTIONS * 1000 / rate)
    measured["offered_rps"] = rate
    print(f"  half rate {name:12} {_short(measured)}", flush=True)
    return measured


def _bare(
    folder: Path, requests: Path, secret: str, seconds: float, threads: int, connections: int
) -> Measured:
    process, url = start("bare", folder, secret, folder / "unused.db")
    try:
        with PeakRss(process.pid) as peak:
            measured = parse_wrk(wrk_output(url, requests, connections, seconds, threads=threads))
    finally:
        stop(process)
    measured["peak_rss_mib"] = peak.mib
    return measured


def _sqlite(
    folder: Path, requests: Path, secret: str, seconds: float, delay_ms: float | None = None
) -> Measured:
    database = folder / "intake.db"
    for leftover in folder.glob("intake.db*"):
        leftover.unlink()
    process, url = start("intake", folder, secret, database)
    try:
        with PeakRss(process.pid) as peak:
            measured = parse_wrk(wrk_output(url, requests, CONNECTIONS, seconds, delay_ms))
    finally:
        stop(process)
    measured["peak_rss_mib"] = peak.mib
    measured["stored"] = _count_sqlite(database)
    return measured


def _postgres(
    server: PostgresServer,
    folder: Path,
    shares: list[Path],
    secret: str,
    seconds: float,
    delay_ms: float | None = None,
) -> Measured:
    """`serve` instances (one per share of the requests) on one fresh database, wrk on each."""
    with server.fresh_database() as database:
        started = [start("intake", folder, secret, database_url=database) for _ in shares]
        connections = CONNECTIONS // len(shares)
        peaks = [PeakRss(process.pid).__enter__() for process, _ in started]
        try:
            wrks = [
                subprocess.Popen(
                    wrk_command(url, connections, seconds, THREADS),
                    env={
                        **os.environ,
                        "REQUESTS_FILE": str(share),
                        "THREADS": str(THREADS),
                        **({"DELAY_MS": f"{delay_ms:.3f}"} if delay_ms else {}),
                    },
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for (_, url), share in zip(started, shares, strict=True)
            ]
            parsed = [parse_wrk(w.communicate(timeout=seconds + 60)[0]) for w in wrks]
        finally:
            for peak in peaks:
                peak.__exit__(None, None, None)
            for process, _ in started:
                stop(process)
        return {
            "rps": sum(p["rps"] for p in parsed),
            "p50_ms": max(p["p50_ms"] for p in parsed),
            "p99_ms": max(p["p99_ms"] for p in parsed),
            "non_2xx": sum(p["non_2xx"] for p in parsed),
            "requests": sum(p["requests"] for p in parsed),
            "stored": _count_postgres(database),
            "peak_rss_mib": max(peak.mib for peak in peaks),
        }


def checks(results: dict[str, list[Measured]]) -> list[str]:
    """Every intake run: no non-2xx, and every answered request stored (at most the requests in
    flight when wrk stopped, one per connection, stored but not counted as answered)."""
    failures = []
    for name, runs in results.items():
        for number, run in enumerate(runs, start=1):
            if run["non_2xx"]:
                failures.append(f"{name} round {number}: {run['non_2xx']:.0f} non-2xx answers")
            if "stored" in run and not (
                run["requests"] <= run["stored"] <= run["requests"] + 2 * CONNECTIONS
            ):
                failures.append(
                    f"{name} round {number}: {run['requests']:.0f} answered, "
                    f"{run['stored']:.0f} stored"
                )
    return failures


def _split(requests: Path, folder: Path) -> list[Path]:
    lines = requests.read_text().splitlines(keepends=True)
    halves = [folder / "requests-a.tsv", folder / "requests-b.tsv"]
    for index, path in enumerate(halves):
        path.write_text("".join(lines[index::2]))
    return halves


def _count_sqlite(database: Path) -> float:
    import sqlite3

    with sqlite3.connect(database) as conn:
        return float(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _count_postgres(database_url: str) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    return float(row[0]) if row else 0.0


def _median(runs: list[Measured]) -> Measured:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _short(measured: Measured) -> str:
    return ", ".join(f"{key} {value:.1f}" for key, value in measured.items())

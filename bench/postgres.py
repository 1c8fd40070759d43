"""Intake on PostgreSQL, one `serve` instance and two, beside the bare endpoint in one run.

A throwaway PostgreSQL server (the tests' own: Debian's binaries, loopback, fsync on) holds a
fresh database per round. Two instances share one database, each driven by its own wrk with
half the connections and its own half of the pre-signed requests (so no message is sent twice);
their rates add up. Latency is also measured at half the one-instance peak rate, with wrk's
per-connection delay (Debian's wrk has no fixed-rate mode).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.serving import parse_wrk, start, wrk_command, wrk_output
from tests.pg_server import PostgresServer, ServerUnavailable, running_server

HERE = Path(__file__).parent


def measure(folder: Path, requests: Path, secret: str, args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of bare / PostgreSQL x1 / PostgreSQL x2, then latency at half the x1 peak."""
    try:
        with running_server() as server:
            return _measure(server, folder, requests, secret, args)
    except ServerUnavailable as missing:
        print(f"postgres: skipped, {missing}", flush=True)
        return {"skipped": str(missing)}


def _measure(
    server: PostgresServer, folder: Path, requests: Path, secret: str, args: argparse.Namespace
) -> dict[str, Any]:
    halves = _split(requests, folder)
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "postgres_x1": [], "postgres_x2": []}
    for number in range(1, args.rounds + 1):
        with _serving(["bare"], folder, secret, None) as [url]:
            rounds["bare"].append(_wrk(url, requests, args.connections, args.seconds))
        with (
            server.fresh_database() as database,
            _serving(["intake"], folder, secret, database) as [url],
        ):
            measured = _wrk(url, requests, args.connections, args.seconds)
            measured["stored"] = _stored(database)
            rounds["postgres_x1"].append(measured)
        with (
            server.fresh_database() as database,
            _serving(["intake", "intake"], folder, secret, database) as urls,
        ):
            rounds["postgres_x2"].append(
                _together(
                    [
                        (url, half, args.connections // 2)
                        for url, half in zip(urls, halves, strict=True)
                    ],
                    args.seconds,
                    database,
                )
            )
        for name, results in rounds.items():
            print(f"round {number} {name:12}: {results[-1]}", flush=True)
    summary: dict[str, Any] = {name: _median(results) for name, results in rounds.items()}
    for name in ("postgres_x1", "postgres_x2"):
        summary[name]["ratio"] = summary[name]["rps"] / summary["bare"]["rps"]
    half_rate = summary["postgres_x1"]["rps"] / 2
    with (
        server.fresh_database() as database,
        _serving(["intake"], folder, secret, database) as [url],
    ):
        summary["postgres_x1_half_rate"] = _at_rate(url, requests, half_rate, args)
    print(
        f"postgres: median of {args.rounds} rounds: bare {summary['bare']['rps']:.0f} req/s; "
        f"one instance {summary['postgres_x1']['rps']:.0f} req/s "
        f"(ratio {summary['postgres_x1']['ratio']:.2f}, p99 {summary['postgres_x1']['p99_ms']:.1f}"
        f" ms); two instances {summary['postgres_x2']['rps']:.0f} req/s "
        f"(ratio {summary['postgres_x2']['ratio']:.2f}); at {half_rate:.0f} req/s offered: "
        f"{summary['postgres_x1_half_rate']}",
        flush=True,
    )
    return summary


def _split(requests: Path, folder: Path) -> list[Path]:
    lines = requests.read_text().splitlines(keepends=True)
    halves = [folder / "requests-a.tsv", folder / "requests-b.tsv"]
    for index, path in enumerate(halves):
        path.write_text("".join(lines[index::2]))
    return halves


@contextmanager
def _serving(
    kinds: list[str], folder: Path, secret: str, database_url: str | None
) -> Iterator[list[str]]:
    started = [start(kind, folder, secret, database_url=database_url) for kind in kinds]
    try:
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(15)


def _wrk(
    url: str, requests: Path, connections: int, seconds: int, delay_ms: float | None = None
) -> dict[str, float]:
    return parse_wrk(wrk_output(url, requests, connections, seconds, delay_ms))


def _together(
    targets: list[tuple[str, Path, int]], seconds: int, database_url: str
) -> dict[str, float]:
    """wrk against each instance at once; rates and request counts add up."""
    processes = [
        subprocess.Popen(
            wrk_command(url, connections, seconds),
            env={**os.environ, "REQUESTS_FILE": str(half), "THREADS": "1"},
            stdout=subprocess.PIPE,
            text=True,
        )
        for url, half, connections in targets
    ]
    parsed = [parse_wrk(process.communicate(timeout=seconds + 60)[0]) for process in processes]
    return {
        "rps": sum(p["rps"] for p in parsed),
        "p50_ms": max(p["p50_ms"] for p in parsed),
        "p99_ms": max(p["p99_ms"] for p in parsed),
        "non_2xx": sum(p["non_2xx"] for p in parsed),
        "requests": sum(p["requests"] for p in parsed),
        "stored": _stored(database_url),
    }


def _at_rate(url: str, requests: Path, rate: float, args: argparse.Namespace) -> dict[str, float]:
    """Latency with `args.connections` connections each pausing between requests so that the
    offered rate is about `rate` (each request takes its pause plus its latency, so the rate
    reached is a little lower; it is reported beside the one offered)."""
    delay = args.connections * 1000 / rate
    measured = _wrk(url, requests, args.connections, args.seconds, delay_ms=delay)
    measured["offered_rps"] = rate
    return measured


def _stored(database_url: str) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    return float(row[0]) if row else 0.0


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}

"""The machine the figures were taken on, and the Markdown table of the results with targets."""

from __future__ import annotations

import datetime
import os
import platform
import sqlite3
import subprocess
from typing import Any

import psycopg


def machine(postgres_url: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty_files": len(_git("status", "--porcelain").splitlines()),
        "wrk": _wrk_version(),
    }
    if postgres_url:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        facts["postgresql"] = row[0] if row else None
    return facts


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    words = (done.stdout or done.stderr).split()
    return " ".join(words[:2])


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(results: dict[str, Any]) -> str:
    """One row per figure: what, the figure, its target and whether it is met, the method."""
    rows: list[tuple[str, str, str, str]] = []
    intake = results.get("intake")
    if intake:
        m, r = intake["median"], intake["ratio"]
        method = f"{intake['method']}"
        rows.append(("1. bare endpoint, req/s", _n(m["bare"]["rps"]), "", method))
        rows.append(
            (
                "1. bare endpoint with wrk -t2 -c64 (wrk not the bottleneck if not higher)",
                f"{_n(m['bare_2x_wrk']['rps'])} ({r['bare_2x_wrk']:.2f}x)",
                "",
                "same rounds",
            )
        )
        for name, label, target in (
            ("sqlite", "SQLite", 0.5),
            ("postgres_x1", "PostgreSQL, one serve", 0.35),
            ("postgres_x2", "PostgreSQL, two serve on one database", 0.5),
        ):
            if name in m:
                rows.append(
                    (
                        f"1. intake {label}, req/s (ratio to bare)",
                        f"{_n(m[name]['rps'])} ({r[name]:.2f})",
                        f">= {target} ({_met(r[name] >= target)})",
                        f"same rounds; 0 non-2xx and all stored: "
                        f"{'yes' if not intake['checks'] else '; '.join(intake['checks'])}",
                    )
                )
        for name, half in intake["half_rate"].items():
            rows.append(
                (
                    f"2. {name} latency at half the peak ({_n(half['offered_rps'])} req/s offered, "
                    f"{_n(half['rps'])} reached)",
                    f"p50 {half['p50_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms",
                    f"p99 <= 20 ms ({_met(half['p99_ms'] <= 20)})",
                    "wrk -t1 -c32 with a per-connection pause (wrk's delay())",
                )
            )
        rss = max(run["peak_rss_mib"] for run in intake["rounds"]["sqlite"])
        rows.append(
            (
                "7. peak RSS of serve (SQLite) under benchmark 1",
                f"{rss:.0f} MiB",
                f"<= 150 MB ({_met(rss * 1.048576 <= 150)})",
                "psutil RSS sampled every 20 ms, max over rounds",
            )
        )
    growth = results.get("growth")
    if growth:
        for size, m in growth["median"].items():
            ratio = growth["ratio_to_empty"][size]
            rows.append(
                (
                    f"3. intake SQLite with {_n(int(size))} events stored, req/s",
                    f"{_n(m['rps'])} ({ratio:.2f}x empty)",
                    f"flat ({_met(ratio >= 0.9 and not growth['checks'])})",
                    f"wrk -t1 -c32, rounds alternated, fresh copy of the store per run; "
                    f"p99 {m['p99_ms']:.1f} ms; 0 non-2xx and all stored: "
                    f"{'yes' if not growth['checks'] else '; '.join(growth['checks'])}",
                )
            )
        size = growth["size"]
        rows.append(
            (
                "3. database bytes per stored event (SQLite, generated store)",
                f"{_n(size['bytes_per_event'])} B (body {_n(size['body_bytes_per_event'])} B)",
                "",
                f"page_count x page_size after a checkpoint / {_n(size['events'])} events",
            )
        )
    end = results.get("endtoend")
    if end:
        all_ready = end["ready"] == end["companies"] and end["one_partner_connection_each"]
        rows.append(
            (
                f"4. end to end, {end['companies']} companies at once: connected 2xx -> partner "
                "connection at the stand-in",
                f"p50 {end['p50_ms']:.0f} ms, p99 {end['p99_ms']:.0f} ms; {end['ready']} ready",
                f"p50 <= 20, p99 <= 100 ms, all ready "
                f"({_met(end['p50_ms'] <= 20 and end['p99_ms'] <= 100 and all_ready)})",
                end["method"],
            )
        )
    replay = results.get("replay")
    if replay:
        bare = replay["bare_read"]["events_per_s"]
        for name, label in (("replay", "full replay"), ("dry_run", "replay --dry-run")):
            rate = replay[name]["events_per_s"]
            alone = replay.get(f"{name}_one_process")
            beside = (
                f"; in one process (REPLAY_PROCESSES=1): {_n(alone['events_per_s'])} events/s, "
                f"x{rate / alone['events_per_s']:.2f} with helpers"
                if alone
                else ""
            )
            rows.append(
                (
                    f"5. {label} of {_n(replay['events'])} events, events/s",
                    f"{_n(rate)} ({replay[name]['seconds']:.1f} s)",
                    f">= 50,000 ({_met(rate >= 50_000)})",
                    f"whole command, helper processes (one per CPU), generated store; bare "
                    f"sqlite3 read of the same rows: {_n(bare)} events/s{beside}",
                )
            )
        measured = replay["replay"]
        rss = measured["peak_rss_mib"]
        helper = measured.get("peak_helper_rss_mib", 0.0)
        total = measured.get("peak_total_rss_mib", rss)
        rows.append(
            (
                f"7. peak RSS of replay of {_n(replay['events'])} events",
                f"{rss:.0f} MiB (each helper {helper:.0f} MiB, all {total:.0f} MiB)",
                f"<= 150 MB ({_met(max(rss, helper) * 1.048576 <= 150)})",
                "psutil RSS of the replay process and of its helpers, sampled every 20 ms",
            )
        )
    for found in results.get("queries", []):
        n = _n(found["companies"])
        for name, label, target in (
            ("company", "GET /companies/{id}", 5.0),
            ("page_pending_auth", "GET /companies?state=pending_auth", 10.0),
            ("dashboard_home", "dashboard GET /", 50.0),
            ("dashboard_companies", "dashboard GET /dashboard/companies", 50.0),
        ):
            p99 = found[name]["p99_ms"]
            rows.append(
                (
                    f"6. {label}, {n} companies",
                    f"p50 {found[name]['p50_ms']:.2f} ms, p99 {p99:.2f} ms "
                    f"({found[name]['requests']:,.0f} requests)",
                    f"p99 <= {target:g} ms ({_met(p99 <= target)})",
                    "wrk -t1 -c1 -d3s (one request at a time) over HTTP against serve on SQLite",
                )
            )
    facts = results["machine"]
    header = (
        f"Measured {facts['date']} at {facts['commit'][:10]}, `{results['command']}`: "
        f"{facts['cores']} cores, Python {facts['python']}, SQLite {facts['sqlite']}, "
        f"PostgreSQL {facts['postgresql'] or 'not run'}, {facts['wrk']}."
    )
    lines = [
        header,
        "",
        "| benchmark | figure (median) | target | method |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)

"""`python -m bench`: the benchmark suite of issue 12, quick by default, `--full` for large sizes.

Writes bench/results.json (the machine, and per benchmark the command, method, rounds, medians
and ratios) and prints a Markdown table of the figures beside their targets. Everything runs on
loopback; every load is bounded in time and count. The machine is shared and noisy: medians of
several rounds, comparisons as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import endtoend, generate, growth, queries, replaying, report, throughput
from bench.generate import EVENTS_PER_COMPANY
from processor.sandbox.sender import generate_secret, sign_headers
from processor.sandbox.webhook_bodies import company_event, encode, new_company
from tests.pg_server import PostgresServer, ServerUnavailable, running_server

HERE = Path(__file__).parent
ALL = ("intake", "growth", "endtoend", "replay", "queries")
QUICK: dict[str, Any] = {
    "growth": [200_000],
    "replay": 100_000,
    "queries": [10_000, 100_000],
    "companies": 100,
}
FULL: dict[str, Any] = {
    "growth": [1_000_000, 5_000_000],
    "replay": 1_000_000,
    "queries": [10_000, 100_000, 1_000_000],
    "companies": 500,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the large sizes (a long run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--only", nargs="+", choices=ALL, default=list(ALL))
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--growth",
        type=int,
        nargs="+",
        metavar="EVENTS",
        help="events already stored for benchmark 3, instead of the mode's sizes",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    sizes = dict(FULL if args.full else QUICK)
    if args.growth:
        sizes["growth"] = args.growth
    began = time.monotonic()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="codat-bench-")))
        server = _postgres(stack)
        results: dict[str, Any] = {
            "command": " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:])]),
            "machine": report.machine(server.url() if server else None),
            "sizes": sizes,
        }
        secret = generate_secret()
        requests = folder / "requests.tsv"
        _write_requests(requests, secret, args.requests)

        def fresh() -> None:
            """Signed anew once two minutes old: serve refuses a timestamp five minutes old (a
            large store's generation takes longer than that)."""
            if time.time() - requests.stat().st_mtime > 120:
                _write_requests(requests, secret, args.requests)

        print(f"bench: {len(args.only)} benchmarks, sizes {sizes}", flush=True)
        if "intake" in args.only:
            print("1, 2, 7: intake throughput, latency at half the peak, memory", flush=True)
            results["intake"] = throughput.measure(
                folder,
                requests,
                secret,
                server,
                rounds=args.rounds,
                seconds=args.seconds,
                refresh=fresh,
            )
        stores = _stores(folder, args.only, sizes)
        if "growth" in args.only:
            print("3: intake as the store grows", flush=True)
            grown = {0: None, **{n: stores[n // EVENTS_PER_COMPANY] for n in sizes["growth"]}}
            results["growth"] = growth.measure(
                folder,
                requests,
                secret,
                grown,
                rounds=args.rounds,
                seconds=args.seconds,
                refresh=fresh,
            )
            results["growth"]["size"] = growth.size_per_event(
                stores[max(sizes["growth"]) // EVENTS_PER_COMPANY]
            )
        if "endtoend" in args.only:
            print("4: end to end", flush=True)
            results["endtoend"] = endtoend.measure(_sub(folder, "e2e"), sizes["companies"])
        if "replay" in args.only:
            print("5, 7: replay", flush=True)
            store = stores[sizes["replay"] // EVENTS_PER_COMPANY]
            results["replay"] = replaying.measure(folder, store, sizes["replay"])
        if "queries" in args.only:
            print("6: queries", flush=True)
            results["queries"] = [
                queries.measure(folder, stores[n], _ids(stores[n]), 3.0) for n in sizes["queries"]
            ]
        results["seconds"] = time.monotonic() - began
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nbench: {results['seconds']:.0f} s; results in {args.output}\n")
    print(report.table(results))
    return 0


def _postgres(stack: ExitStack) -> PostgresServer | None:
    try:
        return stack.enter_context(running_server())
    except ServerUnavailable as missing:
        print(f"bench: PostgreSQL skipped, {missing}", flush=True)
        return None


def _stores(folder: Path, only: list[str], sizes: dict[str, Any]) -> dict[int, Path]:
    """Generated stores, by companies: one store grown in steps, copied at each size wanted."""
    wanted: set[int] = set()
    if "growth" in only:
        wanted |= {n // EVENTS_PER_COMPANY for n in sizes["growth"]}
    if "replay" in only:
        wanted.add(sizes["replay"] // EVENTS_PER_COMPANY)
    if "queries" in only:
        wanted |= set(sizes["queries"])
    stores: dict[int, Path] = {}
    growing = folder / "generated.db"
    have = 0
    for companies in sorted(wanted):
        started = time.perf_counter()
        generate.generate(f"sqlite:///{growing}", companies - have)
        have = companies
        print(
            f"  generated a store of {companies:,} companies "
            f"({companies * EVENTS_PER_COMPANY:,} events) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        stores[companies] = folder / f"generated-{companies}.db"
        shutil.copyfile(growing, stores[companies])
    return stores


def _ids(store: Path) -> list[str]:
    return list(generate.iter_ids(store))


def _sub(folder: Path, name: str) -> Path:
    path = folder / name
    path.mkdir()
    return path


def _write_requests(path: Path, secret: str, count: int) -> None:
    company = new_company("Bench Ltd")
    with path.open("w") as out:
        for _ in range(count):
            body = encode(company_event("company.created", {**company, "id": str(uuid.uuid4())}))
            message_id = f"msg_{uuid.uuid4().hex}"
            headers = sign_headers(secret, message_id, body)
            out.write(
                f"{message_id}\t{headers['webhook-timestamp']}\t{headers['webhook-signature']}\t"
                f"{body.decode()}\n"
            )


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench`: webhook intake against a bare Starlette endpoint, side by side.

Both servers run under uvicorn with the same settings on loopback; wrk drives them with the same
pre-signed requests. Run several rounds and quote medians: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from bench import partner, postgres
from bench.serving import parse_wrk, start, wrk_output
from processor.sandbox.sender import generate_secret, sign_headers
from processor.sandbox.webhook_bodies import company_event, encode, new_company


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=150_000)
    parser.add_argument("--companies", type=int, default=50, help="for the partner latency")
    parser.add_argument(
        "--only",
        choices=("all", "sqlite", "postgres"),
        default="all",
        help="which intake benchmarks to run (the partner latency runs with sqlite and all)",
    )
    args = parser.parse_args()
    if args.only != "postgres":
        print(partner.report(partner.measure(args.companies)), flush=True)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="codat-bench-") as folder:
        secret = generate_secret()
        requests = Path(folder) / "requests.tsv"
        _write_requests(requests, secret, args.requests)
        if args.only != "postgres":
            run(Path(folder), requests, secret, args)
        if args.only != "sqlite":
            postgres.measure(Path(folder), requests, secret, args)
    return 0


def run(folder: Path, requests: Path, secret: str, args: argparse.Namespace) -> int:
    results: dict[str, list[dict[str, float]]] = {"bare": [], "intake": []}
    for round_number in range(1, args.rounds + 1):
        for name in ("bare", "intake"):
            database = folder / f"bench-{round_number}.db"
            server = start(name, folder, secret, database)
            try:
                measured = parse_wrk(
                    wrk_output(server[1], requests, args.connections, args.seconds)
                )
            finally:
                server[0].terminate()
                server[0].wait(15)
            if name == "intake":
                measured["stored"] = _stored(database)
            results[name].append(measured)
            print(f"round {round_number} {name:6}: {json.dumps(measured)}", flush=True)
    bare = statistics.median(r["rps"] for r in results["bare"])
    intake = statistics.median(r["rps"] for r in results["intake"])
    p99 = statistics.median(r["p99_ms"] for r in results["intake"])
    print(
        f"median of {args.rounds} rounds: bare {bare:.0f} req/s, intake {intake:.0f} req/s "
        f"(ratio {intake / bare:.2f}), intake p99 {p99:.1f} ms at {args.connections} connections"
    )
    return 0


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


def _stored(database: Path) -> float:
    import sqlite3

    with sqlite3.connect(database) as conn:
        return float(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())

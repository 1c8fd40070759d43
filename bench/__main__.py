"""`python -m bench`: webhook intake against a bare Starlette endpoint, side by side.

Both servers run under uvicorn with the same settings on loopback; wrk drives them with the same
pre-signed requests. Run several rounds and quote medians: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench import partner
from processor.sandbox.sender import generate_secret, sign_headers
from processor.sandbox.webhook_bodies import company_event, encode, new_company

HERE = Path(__file__).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=150_000)
    parser.add_argument("--companies", type=int, default=50, help="for the partner latency")
    args = parser.parse_args()
    print(partner.report(partner.measure(args.companies)), flush=True)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="codat-bench-") as folder:
        return run(Path(folder), args)


def run(folder: Path, args: argparse.Namespace) -> int:
    secret = generate_secret()
    requests = folder / "requests.tsv"
    _write_requests(requests, secret, args.requests)
    results: dict[str, list[dict[str, float]]] = {"bare": [], "intake": []}
    for round_number in range(1, args.rounds + 1):
        for name in ("bare", "intake"):
            database = folder / f"bench-{round_number}.db"
            server = _start(name, folder, secret, database)
            try:
                measured = _wrk(server[1], requests, args)
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


def _start(
    name: str, folder: Path, secret: str, database: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CODAT_API_KEY": "bench",
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": secret,
        "DATABASE_URL": f"sqlite:///{database}",
        "RECONCILE_INTERVAL_SECONDS": "0",
    }
    if name == "bare":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    else:
        command = [sys.executable, "-m", "processor", "serve", "--port", str(port)]
    log = (folder / f"{name}.log").open("ab")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/webhooks/codat", content=b"{}", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{name} did not start")


def _wrk(url: str, requests: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "REQUESTS_FILE": str(requests), "THREADS": "2"}
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            "--latency",
            "-s",
            str(HERE / "intake.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rps,
        "p50_ms": _latency(output, "50%"),
        "p99_ms": _latency(output, "99%"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _latency(output: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", output)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _stored(database: Path) -> float:
    import sqlite3

    with sqlite3.connect(database) as conn:
        return float(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())

"""Running what is measured: a server (the bare endpoint or `serve`) and wrk against it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent


def start(
    name: str,
    folder: Path,
    secret: str,
    database: Path | None = None,
    *,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CODAT_API_KEY": "bench",
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": secret,
        "DATABASE_URL": database_url or f"sqlite:///{database}",
        "RECONCILE_INTERVAL_SECONDS": "0",
        **(extra_env or {}),
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


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started by `start`."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wrk_command(url: str, connections: int, seconds: float, threads: int = 1) -> list[str]:
    threads = min(threads, connections)
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "30s",
        "-s",
        str(HERE / "intake.lua"),
        url,
    ]


def wrk_output(
    url: str,
    requests: Path,
    connections: int,
    seconds: float,
    delay_ms: float | None = None,
    threads: int = 1,
    script: str = "intake.lua",
    env: dict[str, str] | None = None,
) -> str:
    """Run wrk (bounded: `seconds`, and a timeout beyond them) and return its report."""
    threads = min(threads, connections)
    env = {**os.environ, **(env or {}), "REQUESTS_FILE": str(requests), "THREADS": str(threads)}
    if delay_ms is not None:
        env["DELAY_MS"] = f"{delay_ms:.3f}"
    command = wrk_command(url, connections, seconds, threads)
    command[command.index("-s") + 1] = str(HERE / script)
    return subprocess.run(
        command,
        timeout=seconds + 60,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def parse_wrk(output: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    count = re.search(r"(\d+) requests in", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rps,
        "p50_ms": _latency(output, "50%"),
        "p99_ms": _latency(output, "99%"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "requests": float(count.group(1)) if count else float("nan"),
    }


def _latency(output: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", output)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

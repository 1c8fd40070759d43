"""Benchmark 6: queries over real HTTP against `serve`, on stores of several sizes.

`GET /companies/{id}` (random companies of the store), the first page of
`GET /companies?state=pending_auth` (bearer token), and the dashboard's funnel `GET /` and
`GET /dashboard/companies` (with a session cookie made as the sign-in makes it). wrk with one
thread and one connection: one request at a time, so the latencies are of an idle server.
"""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path
from typing import Any

from bench.serving import parse_wrk, start, stop, wrk_output
from processor.http import session
from processor.sandbox.sender import generate_secret


def measure(folder: Path, database: Path, ids: list[str], seconds: float) -> dict[str, Any]:
    token, secret = secrets.token_hex(16), generate_secret()
    key = session.server_key((secret,))
    cookie = f"{session.COOKIE}={session.issue(key, token, int(time.time()))}"
    sample = random.Random(12).sample(ids, min(len(ids), 2000))
    queries = {
        "company": ([f"/companies/{c}" for c in sample], "Authorization", f"Bearer {token}"),
        "page_pending_auth": (
            ["/companies?state=pending_auth"],
            "Authorization",
            f"Bearer {token}",
        ),
        "dashboard_home": (["/"], "Cookie", cookie),
        "dashboard_companies": (["/dashboard/companies"], "Cookie", cookie),
    }
    results: dict[str, Any] = {"companies": len(ids)}
    extra = {"STATUS_API_TOKEN": token}
    process, url = start("intake", folder, secret, database, extra_env=extra)
    try:
        for name, (paths, header, value) in queries.items():
            listed = folder / f"paths-{name}.txt"
            listed.write_text("\n".join(paths) + "\n")
            measured = parse_wrk(
                wrk_output(
                    url,
                    listed,
                    1,
                    seconds,
                    script="paths.lua",
                    env={"PATHS_FILE": str(listed), "HEADER_NAME": header, "HEADER_VALUE": value},
                )
            )
            results[name] = measured
            print(f"  {len(ids)} companies {name:20} {measured}", flush=True)
    finally:
        stop(process)
    return results

"""A long run at a steady rate (`make soak`; not part of `make test`).

Onboards companies continuously through the stand-in for Codat (real webhooks, real partner
expense connections) and samples the `serve` process: resident memory must grow by less than
10 percent after warm-up, and its open file descriptors must not grow. SOAK_SECONDS sets the
length (default 600), SOAK_RATE the companies onboarded per second (default 5).
"""

from __future__ import annotations

import os
import statistics
import time

import psutil
import pytest

from tests.conftest import Codat
from tests.support import ServeProcess, partner_connections, wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
pytestmark = [
    pytest.mark.soak,
    pytest.mark.serve_process,
    pytest.mark.timeout(SOAK_SECONDS + 300),
]


def test_memory_and_file_descriptors_stay_flat(codat: Codat, serve: ServeProcess) -> None:
    seconds = SOAK_SECONDS
    rate = float(os.environ.get("SOAK_RATE", "5"))
    warm_up = min(60.0, seconds / 5)
    assert serve.process is not None
    process = psutil.Process(serve.process.pid)
    samples: list[tuple[float, int, int]] = []
    onboarded: list[str] = []
    started = time.monotonic()
    next_sample = started
    while time.monotonic() - started < seconds:
        company = codat.create_company(f"Soak {len(onboarded)}")
        connection = codat.create_connection(company["id"])
        codat.authorize(company["id"], connection["id"])
        onboarded.append(company["id"])
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - started, process.memory_info().rss, process.num_fds()))
            next_sample = now + 5
        time.sleep(max(0.0, len(onboarded) / rate - (time.monotonic() - started)))
    for company_id in onboarded[-20:]:
        serve.wait_state(company_id, "ready", timeout=60)
    wait_for(
        lambda: all(len(partner_connections(codat.state(), c)) == 1 for c in onboarded[-20:]),
        what="partner connections",
    )
    after_warm_up = [s for s in samples if s[0] >= warm_up]
    assert len(after_warm_up) >= 3, samples
    baseline_rss = statistics.median(s[1] for s in after_warm_up[:3])
    final_rss = statistics.median(s[1] for s in after_warm_up[-3:])
    growth = (final_rss - baseline_rss) / baseline_rss
    fds = [s[2] for s in after_warm_up]
    print(
        f"\nsoak: {len(onboarded)} companies in {seconds:.0f} s; RSS {baseline_rss / 2**20:.1f} MiB"
        f" -> {final_rss / 2**20:.1f} MiB ({growth:+.1%}); fds {fds[0]} -> {fds[-1]} "
        f"(max {max(fds)})"
    )
    assert growth < 0.10, f"RSS grew {growth:.1%} after warm-up"
    assert fds[-1] <= fds[0] + 2, f"file descriptors grew from {fds[0]} to {fds[-1]}"

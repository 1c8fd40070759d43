"""Status queries at scale: the status document and a page of companies, from a store holding
`--companies` companies (one event each), read through a read-only connection as `serve` does.

Run: python -m bench.status --companies 1000000
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from processor import clock
from processor.http.documents import company_document, summary
from processor.work.folding import fold_companies
from store import NewEvent, open_store


def populate(path: Path, companies: int, batch: int = 5000) -> list[str]:
    store = open_store(f"sqlite:///{path}")
    ids = []
    now = clock.now()
    try:
        for start in range(0, companies, batch):
            chunk = [str(uuid.uuid4()) for _ in range(min(batch, companies - start))]
            events = [_created(company_id, now) for company_id in chunk]
            with store.transaction():
                store.append_events(events)
                fold_companies(store, chunk, now)
            ids.extend(chunk)
    finally:
        store.close()
    return ids


def _created(company_id: str, now: str) -> NewEvent:
    return NewEvent(
        message_id=f"msg_{uuid.uuid4().hex}",
        event_id=str(uuid.uuid4()),
        event_type="company.created",
        body_format="current",
        source="webhook",
        generated_date=now,
        received_at=now,
        body=b"{}",
        headers={},
        fields={"company_id": company_id, "company_name": "Bench Ltd"},
        company_id=company_id,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--companies", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codat-bench-") as folder:
        path = Path(folder) / "status.db"
        started = time.perf_counter()
        ids = populate(path, args.companies)
        print(f"populated {len(ids)} companies in {time.perf_counter() - started:.0f} s")
        store = open_store(f"sqlite:///{path}", readonly=True)
        try:
            document = _timed(lambda: company_document(store, random.choice(ids)), args.queries)
            page = _timed(
                lambda: [
                    summary(row, row.company_id)
                    for row in store.companies(state="created", limit=100, after=None).companies
                ],
                args.queries // 10,
            )
        finally:
            store.close()
    print(f"GET /companies/{{id}} document: {document}")
    print(f"GET /companies?state=created&limit=100 page: {page}")


def _timed(fn, count: int) -> str:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return (
        f"median {statistics.median(times):.3f} ms, p99 {times[int(len(times) * 0.99) - 1]:.3f} ms"
        f" over {count} queries"
    )


if __name__ == "__main__":
    main()

"""Fill a store fast, through the store's own API in bulk, with what the intake would have stored.

Each company gets the two webhooks Codat sends when a company is created and its customer starts
linking an accounting platform: `company.created` and `connection.created` (`PendingAuth`), so it
ends in `pending_auth`. The bodies are the stand-in's (processor/sandbox/webhook_bodies.py),
signed as the stand-in signs them, turned into events by the intake's own `webhook_event`, and
appended and folded in large transactions (`append_events`, then `fold_companies`, as the
worker folds). `check()` proves the claim: it sends one company's two webhooks to a real `serve`
and compares every stored column, and the company's row, with the generator's.

Run: python -m bench.generate sqlite:///big.db --companies 500000 [--check]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from processor import clock
from processor.intake.bodies import parse_body, webhook_event
from processor.sandbox.sender import generate_secret
from processor.sandbox.webhook_bodies import (
    company_event,
    connection_event,
    encode,
    new_company,
    new_connection,
)
from processor.work.folding import fold_companies
from store import NewEvent, open_store

# The stand-in's sender is an httpx client: its user agent is one of the headers kept.
USER_AGENT = f"python-httpx/{httpx.__version__}"
EVENTS_PER_COMPANY = 2


def bodies(company_id: str, name: str) -> list[bytes]:
    """One company's two webhook bodies, as the stand-in sends them."""
    company = new_company(name, company_id=company_id)
    connection = new_connection(company_id, "gbol")
    return [
        encode(company_event("company.created", company)),
        encode(connection_event("connection.created", company, connection)),
    ]


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers the intake keeps, in the order the stand-in's httpx client sends them."""
    digest = hmac.digest(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


def event_of(body: bytes, key: bytes, message_id: str, timestamp: int) -> NewEvent:
    """The event the intake builds for this body (its `webhook_event`, on its parsed body)."""
    return webhook_event(
        parse_body(body),
        body=body,
        message_id=message_id,
        timestamp=timestamp,
        headers=signed_headers(key, message_id, timestamp, body),
        received_at=clock.now(),
    )


def generate(url: str, companies: int, *, batch: int = 5000, secret: str = "") -> list[str]:
    """Append and fold `companies` companies (two events each); their ids, in order."""
    key = _key(secret or generate_secret())
    store = open_store(url)
    ids: list[str] = []
    try:
        for start in range(0, companies, batch):
            chunk = [str(uuid.uuid4()) for _ in range(min(batch, companies - start))]
            timestamp = int(time.time())
            events = [
                event_of(body, key, f"msg_{uuid.uuid4().hex}", timestamp)
                for company_id in chunk
                for body in bodies(company_id, f"Bench {company_id[:8]} Ltd")
            ]
            with store.transaction():
                store.append_events(events)
                fold_companies(store, chunk, clock.now())
            ids.extend(chunk)
    finally:
        store.close()
    return ids


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


# The self-check: one company through a real `serve`, the same company through the generator.

# Columns that differ between any two deliveries (times of receipt and folding, the row number).
VARYING = {"seq", "received_at", "last_delivered_at", "processed_at", "fold_order"}


def check() -> list[str]:
    """Differences between rows stored by the real intake and by the generator (none: [])."""
    from bench.serving import start

    secret = generate_secret()
    company_id = str(uuid.uuid4())
    sent = bodies(company_id, "Check Ltd")
    ids = [f"msg_{uuid.uuid4().hex}" for _ in sent]
    timestamp = int(time.time())
    key = _key(secret)
    with tempfile.TemporaryDirectory(prefix="codat-bench-") as folder:
        real, generated = Path(folder) / "real.db", Path(folder) / "generated.db"
        process, url = start("intake", Path(folder), secret, real)
        try:
            with httpx.Client(base_url=url, headers={"user-agent": USER_AGENT}) as client:
                for body, message_id in zip(sent, ids, strict=True):
                    headers = signed_headers(key, message_id, timestamp, body)
                    answer = client.post("/webhooks/codat", content=body, headers=headers)
                    answer.raise_for_status()
            _wait_folded(real, len(sent))
        finally:
            process.terminate()
            process.wait(15)
        store = open_store(f"sqlite:///{generated}")
        try:
            with store.transaction():
                store.append_events(
                    [
                        event_of(body, key, message_id, timestamp)
                        for body, message_id in zip(sent, ids, strict=True)
                    ]
                )
                fold_companies(store, [company_id], clock.now())
        finally:
            store.close()
        return _compare(_rows(real), _rows(generated))


def _wait_folded(path: Path, events: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(path) as conn:
            sql = "SELECT COUNT(*) FROM events WHERE processed_at IS NOT NULL"
            if conn.execute(sql).fetchone()[0] == events:
                return
        time.sleep(0.05)
    raise SystemExit("the real intake did not fold the check's events in time")


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return {
            table: [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]
            for table in ("events", "companies", "effects")
        }


def _compare(
    real: dict[str, list[dict[str, Any]]], generated: dict[str, list[dict[str, Any]]]
) -> list[str]:
    differences = []
    for table, rows in real.items():
        other = generated[table]
        if len(rows) != len(other):
            differences.append(f"{table}: {len(rows)} rows stored, {len(other)} generated")
            continue
        for row, twin in zip(rows, other, strict=True):
            for column, value in row.items():
                if column in VARYING or column.endswith("_at"):
                    continue
                if _normal(column, value) != _normal(column, twin[column]):
                    differences.append(f"{table}.{column}: {value!r} != {twin[column]!r}")
    return differences


def _normal(column: str, value: Any) -> Any:
    """JSON columns compared as values, with their own times of receipt masked."""
    if column in ("fields", "headers", "data") and isinstance(value, str):
        return _masked(json.loads(value))
    return value


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<time>" if k.endswith(("At", "_at")) else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def iter_ids(path: Path) -> Iterator[str]:
    with sqlite3.connect(path) as conn:
        for (company_id,) in conn.execute("SELECT company_id FROM companies"):
            yield company_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", nargs="?", help="the store to fill, e.g. sqlite:///big.db")
    parser.add_argument("--companies", type=int, default=50_000)
    parser.add_argument("--check", action="store_true", help="compare with the real intake")
    args = parser.parse_args()
    if args.check:
        differences = check()
        print("check: " + ("identical" if not differences else "; ".join(differences)))
        if differences:
            return 1
    if args.url:
        started = time.perf_counter()
        generate(args.url, args.companies, secret=generate_secret())
        seconds = time.perf_counter() - started
        events = args.companies * EVENTS_PER_COMPANY
        print(f"generated {events} events in {seconds:.1f} s ({events / seconds:.0f} events/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Disk and database faults: a full disk, a database locked by another process, a read-only
database file. Intake answers 503 (never 2xx for an event it did not store), /healthz reports
the fault, and both recover once the fault clears; a read-only file stops start-up.

The tests run as root (as on this project's machines) and mount what they need: a small tmpfs
for the database, and a read-only bind mount for the read-only file. Nothing depends on where
the repository or its virtualenv live.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from processor.sandbox.sender import generate_secret
from processor.sandbox.webhook_bodies import company_event, new_company
from tests.support import API_KEY, Serve, ServeThread, open_db, post_webhook


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def secret() -> str:
    return generate_secret()


def start_serve(database: Path, secret: str) -> Serve:
    """The real app under uvicorn in a thread of this process: none of these tests kills it."""
    return ServeThread(
        database,
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": "http://127.0.0.1:9",
            "CODAT_WEBHOOK_SECRET": secret,
            "DATABASE_BUSY_TIMEOUT_SECONDS": "0.5",
            "RECONCILE_INTERVAL_SECONDS": "0",
        },
    ).start()


def send(serve: Serve, secret: str) -> tuple[httpx.Response, str]:
    message_id = f"msg_{uuid.uuid4().hex}"
    body = company_event("company.created", new_company("Disk Faults Ltd"))
    return post_webhook(serve.url, body, secret, message_id=message_id), message_id


def stored(database: Path, message_id: str) -> int:
    store = open_db(database, readonly=True)
    try:
        return len(store.find_events(event_or_message_id=message_id))
    finally:
        store.close()


def health(serve: Serve) -> httpx.Response:
    return httpx.get(f"{serve.url}/healthz", timeout=10)


def fill(disk: Path, name: str, leave: int = 0) -> Path:
    """A file that takes all the free space of `disk` (to the last byte) but `leave` bytes."""
    filler = disk / name
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


def test_disk_full_answers_503_then_recovers(small_disk: Path, secret: str) -> None:
    """With the disk full, webhooks are refused and /healthz says so; once space is freed both
    recover. Then the disk fills up again while webhooks keep coming: the first ones still fit,
    later ones may not. Every message answered 2xx is in the store afterwards; one answered 503
    is not (Codat retries it)."""
    database = small_disk / "processor.db"
    serve = start_serve(database, secret)
    accepted: list[str] = []
    refused: list[str] = []

    def deliver() -> int:
        answer, message_id = send(serve, secret)
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 200:
            accepted.append(message_id)
        else:
            refused.append(message_id)
            assert "could not be stored" in answer.json()["error"]
        return answer.status_code

    try:
        assert deliver() == 200
        filler = fill(small_disk, "filler")
        for _ in range(5):
            deliver()
        assert refused, "with the disk full, some webhook must have been refused"
        unhealthy = health(serve)
        assert unhealthy.status_code == 503
        assert unhealthy.json()["status"] == "error"
        filler.unlink()
        assert deliver() == 200
        assert health(serve).json() == {"status": "ok"}
        # Full again but 256 KiB: room for a few events, then (WAL space permitting) none.
        filler = fill(small_disk, "filler", leave=256 * 1024)
        statuses = [deliver() for _ in range(20)]
        assert statuses[0] == 200, statuses
        filler.unlink()
    finally:
        serve.stop()
    lost = [message_id for message_id in accepted if stored(database, message_id) != 1]
    assert lost == [], f"answered 2xx but not stored once: {lost} of {len(accepted)}"
    kept = [message_id for message_id in refused if stored(database, message_id) != 0]
    assert kept == [], f"answered 503 but stored: {kept}"


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` on a read-only bind mount of itself: not even root may write it.

    Its folder stays writable, as with a file of mode 0444 that `serve` does not own: SQLite
    opens the file read-only and may still create the `-wal` and `-shm` files beside it.
    """
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        with pytest.raises(OSError) as refused:
            path.open("r+b").close()
        assert refused.value.errno == errno.EROFS
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_read_only_database_stops_start_up_with_one_line(small_disk: Path, secret: str) -> None:
    """`serve` runs as root, as everywhere here; a read-only mount is what root cannot write."""
    database = small_disk / "processor.db"
    open_db(database).close()  # the last connection closed: no -wal or -shm left open
    before = database.read_bytes()
    env = {
        "PATH": os.environ["PATH"],
        "CODAT_API_KEY": API_KEY,
        "CODAT_WEBHOOK_SECRET": secret,
        "DATABASE_URL": f"sqlite:///{database}",
    }
    command = [sys.executable, "-m", "processor", "serve", "--port", "0"]
    with read_only(database):
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=30, cwd=small_disk
            )
        except subprocess.TimeoutExpired as running:
            pytest.fail(f"serve started on a read-only database; stderr: {running.stderr!r}")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"codat-expenses: cannot open database '{database}': "), lines[0]
    assert "readonly" in lines[0], lines[0]
    assert done.stdout == ""
    assert database.read_bytes() == before


HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


def test_database_locked_by_another_process_answers_503_then_recovers(
    tmp_path: Path, secret: str
) -> None:
    database = tmp_path / "processor.db"
    serve = start_serve(database, secret)
    try:
        assert send(serve, secret)[0].status_code == 200
        # Another process (a bare interpreter, quick to start) holds the database's write lock.
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(database)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline() == "locked\n"
            started = time.monotonic()
            answer, message_id = send(serve, secret)
            assert answer.status_code == 503, answer.text
            assert "locked" in answer.json()["error"]
            assert time.monotonic() - started < 5  # well inside Codat's 15 s
            assert health(serve).status_code == 503
        finally:
            holder.communicate("release\n", timeout=10)
        assert holder.returncode == 0
        answer, later = send(serve, secret)
        assert answer.status_code == 200, answer.text
        assert health(serve).json() == {"status": "ok"}
    finally:
        serve.stop()
    assert stored(database, message_id) == 0
    assert stored(database, later) == 1

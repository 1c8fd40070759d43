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
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from processor.sender import generate_secret
from processor.webhook_bodies import company_event, new_company
from store import Store
from tests.support import API_KEY, ServeProcess, post_webhook


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


def start_serve(database: Path, secret: str) -> ServeProcess:
    return ServeProcess(
        database,
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": "http://127.0.0.1:9",
            "CODAT_WEBHOOK_SECRET": secret,
            "DATABASE_BUSY_TIMEOUT_SECONDS": "0.5",
            "RECONCILE_INTERVAL_SECONDS": "0",
        },
    ).start()


def send(serve: ServeProcess, secret: str) -> tuple[httpx.Response, str]:
    message_id = f"msg_{uuid.uuid4().hex}"
    body = company_event("company.created", new_company("Disk Faults Ltd"))
    return post_webhook(serve.url, body, secret, message_id=message_id), message_id


def stored(database: Path, message_id: str) -> int:
    store = Store.open(database, readonly=True)
    try:
        return len(store.find_events(event_or_message_id=message_id))
    finally:
        store.close()


def health(serve: ServeProcess) -> httpx.Response:
    return httpx.get(f"{serve.url}/healthz", timeout=10)


def test_disk_full_answers_503_then_recovers(small_disk: Path, secret: str) -> None:
    serve = start_serve(small_disk / "processor.db", secret)
    try:
        answer, _ = send(serve, secret)
        assert answer.status_code == 200
        filler = small_disk / "filler"
        # Fill the file system to the last byte.
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        refused = []
        for _ in range(5):
            answer, message_id = send(serve, secret)
            assert answer.status_code in (200, 503), answer.text
            if answer.status_code == 503:
                refused.append(message_id)
                assert "could not be stored" in answer.json()["error"]
        assert refused, "with the disk full, some webhook must have been refused"
        unhealthy = health(serve)
        assert unhealthy.status_code == 503
        assert unhealthy.json()["status"] == "error"
        filler.unlink()
        answer, message_id = send(serve, secret)
        assert answer.status_code == 200, answer.text
        assert health(serve).json() == {"status": "ok"}
        serve.stop()
        database = small_disk / "processor.db"
        assert stored(database, message_id) == 1
        for message_id in refused:
            assert stored(database, message_id) == 0  # 503 means not stored: Codat retries it
    finally:
        serve.stop()


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
    Store.open(database).close()  # the last connection closed: no -wal or -shm left open
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


def test_database_locked_by_another_process_answers_503_then_recovers(
    tmp_path: Path, secret: str
) -> None:
    database = tmp_path / "processor.db"
    serve = start_serve(database, secret)
    try:
        assert send(serve, secret)[0].status_code == 200
        locked, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            conn = sqlite3.connect(database, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(30)
            conn.execute("ROLLBACK")
            conn.close()

        holder = threading.Thread(target=hold_lock)
        holder.start()
        try:
            assert locked.wait(10)
            started = time.monotonic()
            answer, message_id = send(serve, secret)
            assert answer.status_code == 503, answer.text
            assert "locked" in answer.json()["error"]
            assert time.monotonic() - started < 5  # well inside Codat's 15 s
            assert health(serve).status_code == 503
        finally:
            release.set()
            holder.join()
        answer, later = send(serve, secret)
        assert answer.status_code == 200, answer.text
        assert health(serve).json() == {"status": "ok"}
        serve.stop()
        assert stored(database, message_id) == 0
        assert stored(database, later) == 1
    finally:
        serve.stop()

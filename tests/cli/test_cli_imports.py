"""`codat-expenses replay` loads what it uses (issue 12, replay's start-up): a command's module is
imported when it runs, and a dry run, which calls no one, loads neither httpx nor the web app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from store import open_store
from tests.store.samples import new_event

# Run as `python -m processor ARGS`, then list what was imported of these packages.
PROBE = """
import runpy, sys, json, atexit
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["codat-expenses", *sys.argv[1:]]
runpy.run_module("processor", run_name="__main__")
"""
NOT_FOR_REPLAY = (
    "processor.app",
    "processor.sandbox",
    "processor.cli.serve",
    "processor.cli.sandbox",
    "processor.cli.status",
    "processor.cli.configure",
    "starlette",
    "uvicorn",
)


def imported(database: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "CODAT_API_KEY": "test",
        "CODAT_BASE_URL": "http://127.0.0.1:9",
    }
    env.pop("CODAT_WEBHOOK_SECRET", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = set(json.loads(done.stderr.strip().splitlines()[-1]))
    return done, modules


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


def test_replay_loads_only_its_own_command(tmp_path: Path) -> None:
    database = tmp_path / "processor.db"
    open_store(f"sqlite:///{database}").close()
    done, modules = imported(database, "replay")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to do" in done.stdout
    assert "processor.cli.replay" in modules
    assert loaded(modules, NOT_FOR_REPLAY) == []


def test_a_dry_run_loads_no_http_client(tmp_path: Path) -> None:
    database = tmp_path / "processor.db"
    open_store(f"sqlite:///{database}").close()
    done, modules = imported(database, "replay", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run: 0 matching events" in done.stdout
    assert loaded(modules, (*NOT_FOR_REPLAY, "httpx", "processor.codat")) == []


def test_a_replay_with_no_command_to_carry_out_opens_no_codat_client(tmp_path: Path) -> None:
    database = tmp_path / "processor.db"
    store = open_store(f"sqlite:///{database}")
    with store.transaction():
        store.append_events(
            [
                new_event(
                    f"msg-{n}",
                    event_id=f"evt-{n}",
                    company_id=f"company-{n}",
                    event_type="company.created",
                )
                for n in range(3)
            ]
        )
    store.close()
    done, modules = imported(database, "replay")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 3 events of 3 companies: 3 changed state, 0 commands run" in done.stdout
    assert loaded(modules, (*NOT_FOR_REPLAY, "httpx", "processor.codat")) == []


def test_help_still_lists_every_command(tmp_path: Path) -> None:
    done, _ = imported(tmp_path / "none.db", "--help")
    assert done.returncode == 0, done.stderr
    for name in ("replay", "serve", "sandbox", "status", "store", "syncs", "unlink"):
        assert f"\n  {name} " in done.stdout, name

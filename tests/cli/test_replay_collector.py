"""`replay` turns Python's cycle collector off while it rebuilds companies (their records die by
reference count) and on while commands run (a Codat client, its tasks and errors make cycles);
whatever it did, the process gets the collector back as it was, nothing left frozen.

The replay runs in this process through click's CliRunner, on a real SQLite store holding a
company's events, so that the collector's state after it can be read.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from processor.cli import main
from processor.cli.replay import _collecting
from processor.sandbox.sender import generate_secret
from store import NewEvent, open_store
from tests.support import API_KEY


@pytest.fixture
def collector_on() -> Iterator[None]:
    """The collector on and nothing frozen, as a process starts; restored after the test."""
    was_enabled = gc.isenabled()
    gc.enable()
    gc.unfreeze()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def stored_company(path: Path) -> str:
    """A store with one company's `company.created` event, folded by the replay."""
    store = open_store(f"sqlite:///{path}")
    try:
        event = NewEvent(
            message_id="msg_collector",
            event_id="evt-collector",
            event_type="company.created",
            body_format="current",
            source="webhook",
            company_id="company-collector",
            connection_id=None,
            generated_date="2026-12-07T10:00:00.0000000Z",
            received_at="2026-12-07T10:00:01.0000000Z",
            fields={"company_id": "company-collector", "company_name": "Collector Ltd"},
            body=b"{}",
            headers={},
        )
        with store.transaction():
            store.append_events([event])
    finally:
        store.close()
    return "company-collector"


@pytest.mark.parametrize("options", [[], ["--dry-run"]], ids=["full", "dry-run"])
def test_replay_gives_the_collector_back_as_it_found_it(
    tmp_path: Path, collector_on: None, options: list[str]
) -> None:
    stored_company(tmp_path / "store.db")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": generate_secret(),
        "LOG_FORMAT": "json",
    }
    result = CliRunner().invoke(main, ["replay", *options], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 companies" in result.output, result.output
    assert gc.isenabled(), "replay left the cycle collector off"
    assert gc.get_freeze_count() == 0, f"replay left {gc.get_freeze_count()} objects frozen"


def test_commands_run_with_the_collector_on(collector_on: None) -> None:
    seen: list[bool] = []

    def run(work: Callable[[Any], Awaitable[None]]) -> None:
        seen.append(gc.isenabled())

    gc.disable()  # as during a replay's rebuilds
    _collecting(run)(lambda codat: _nothing())
    assert seen == [True], "the commands ran with the collector off"
    assert not gc.isenabled(), "the collector stayed on after the commands, for the rebuilds"


def test_the_collector_goes_off_again_when_the_commands_fail(collector_on: None) -> None:
    def run(work: Callable[[Any], Awaitable[None]]) -> None:
        raise RuntimeError("Codat went away")

    gc.disable()
    with pytest.raises(RuntimeError, match="Codat went away"):
        _collecting(run)(lambda codat: _nothing())
    assert not gc.isenabled()


async def _nothing() -> None:
    return None

"""`status` tables: never an id, a time or an error cut; a subset says it is one."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from handlers.events import Connection
from handlers.state import CompanyState
from tests.cli_support import Cli
from tests.support import open_db

ERROR = (
    "POST /companies/x/sync/expenses/connections/partnerExpense: Codat answered 402: the free "
    "tier allows 5 companies; upgrade the plan or delete a company, then replay --failed"
)


@pytest.fixture
def database(tmp_path: Path) -> tuple[Path, list[str]]:
    """Seven companies in `pending_auth`, each with a long last error."""
    path = tmp_path / "processor.db"
    store = open_db(path)
    ids = sorted(str(uuid.uuid4()) for _ in range(7))
    with store.transaction():
        for number, company_id in enumerate(ids):
            state = CompanyState(
                company_id=company_id,
                name=f"Company number {number} with a rather long name, Ltd",
                accounting_connection=Connection(str(uuid.uuid4()), "PendingAuth", "gbol"),
                last_error=f"{ERROR} ({number})",
                last_error_at="2026-12-01T10:00:00.0000000Z",
            )
            store.save_company(company_id, state.state, state.to_dict(), "2026-12-01T10:00:00Z")
    store.close()
    return path, ids


def on_a_terminal(cli: Cli, columns: int, *args: str) -> str:
    """The output of a command run on a pseudo-terminal `columns` wide."""
    leader, follower = pty.openpty()
    env = {**cli.env, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "processor", *args],
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(30) == 0, b"".join(chunks).decode(errors="replace")
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    return text.replace("\r\n", "\n")


def cells(text: str, column: int) -> dict[str, str]:
    """Per company id, the text of one column of a boxed table, its folded lines joined."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        parts = line.split("\u2502")  # the box's vertical bar
        if len(parts) < column + 2:
            continue
        if parts[1].strip():
            current = parts[1].strip()
            found[current] = []
        if current is not None:
            found[current].append(parts[column + 1].strip())
    return {key: " ".join(value) for key, value in found.items()}


def squeezed(text: str) -> str:
    return "".join(text.split())


def test_on_a_pipe_every_id_and_every_whole_error_is_on_its_line(
    database: tuple[Path, list[str]],
) -> None:
    path, ids = database
    cli = Cli(path, "http://127.0.0.1:9", COLUMNS="40")
    output = cli.ok("status").stdout
    for number, company_id in enumerate(ids):
        [line] = [line for line in output.splitlines() if company_id in line]
        assert f"{ERROR} ({number})" in line, line
    assert "7 companies" in output
    # Each row ends with the sentence the company's own status says.
    for company_id in ids:
        [line] = [line for line in output.splitlines() if company_id in line]
        assert "The customer's authorization of gbol failed: " in line, line


def test_on_a_narrow_terminal_ids_stay_whole_and_dropped_columns_are_named(
    database: tuple[Path, list[str]],
) -> None:
    path, ids = database
    output = on_a_terminal(Cli(path, "http://127.0.0.1:9"), 100, "status")
    for company_id in ids:
        assert company_id in output, output
    assert "(too narrow for: name, why; widen the terminal or use --json)" in output, output
    errors = cells(output, 2)
    for number, company_id in enumerate(ids):
        assert squeezed(errors[company_id]) == squeezed(f"{ERROR} ({number})"), output


def test_a_listing_of_a_subset_says_so(database: tuple[Path, list[str]]) -> None:
    path, ids = database
    output = Cli(path, "http://127.0.0.1:9").ok("status", "--limit", "2").stdout
    assert "2 of 7 companies shown; --limit N to show more" in output, output
    assert ids[0] in output and ids[1] in output and ids[2] not in output

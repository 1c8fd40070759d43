"""Helpers for the command-line tests: `codat-expenses` as a subprocess on a real SQLite file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store import open_store
from tests.conftest import Codat
from tests.support import API_KEY, Serve, open_db, wait_for

PARTNER_EXPENSE_PATH = "/companies/*/sync/expenses/connections/partnerExpense"


@dataclass
class Result:
    """What one command run did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"codat-expenses {' '.join(self.args)} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """`python -m processor ...` against one database file and one stand-in for Codat."""

    def __init__(
        self, database: Path, codat_url: str, *, database_url: str | None = None, **extra: str
    ) -> None:
        self.database = database
        self.database_url = database_url or f"sqlite:///{database}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": codat_url,
            "RETRY_INITIAL_SECONDS": "0.05",
            "RETRY_MAX_SECONDS": "0.5",
            "CODAT_TIMEOUT_SECONDS": "2",
            # Wide enough that rich never wraps a table cell or header.
            "COLUMNS": "250",
            **extra,
        }
        self.env.pop("CODAT_WEBHOOK_SECRET", None)

    @classmethod
    def beside(cls, serve: Serve, codat_url: str, **extra: str) -> Cli:
        """The command line on the store a running `serve` uses, whichever backend it is."""
        return cls(serve.database, codat_url, database_url=serve.database_url, **extra)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "processor", *args]

    def run(self, *args: str, timeout: float = 60.0) -> Result:
        done = subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(list(args), done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, timeout: float = 60.0) -> Result:
        """Run a command that must exit 0."""
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, result.describe()
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def onboard(self, name: str, platform: str = "gbol") -> dict[str, Any]:
        document: dict[str, Any] = self.ok(
            "onboard", "--name", name, "--platform", platform, "--json"
        ).json()
        return document

    def document(self, company_id: str) -> dict[str, Any]:
        """`status COMPANY_ID --json`: the status document, read-only."""
        document: dict[str, Any] = self.ok("status", company_id, "--json").json()
        return document


def stored_state(database: Path | str, company_id: str) -> tuple[str | None, dict[str, Any] | None]:
    """The company's row as the store holds it: (state, CompanyState dict). `database` is a
    SQLite file, or any store's URL."""
    store = (
        open_store(database, readonly=True)
        if isinstance(database, str)
        else open_db(database, readonly=True)
    )
    try:
        row = store.company(company_id)
        return (row.state, row.data) if row is not None else (None, None)
    finally:
        store.close()


def file_digests(database: Path) -> dict[str, str]:
    """sha256 of the database file and of its WAL, if there is one."""
    digests = {}
    for path in (database, Path(f"{database}-wal")):
        if path.exists():
            digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def requests_to(codat: Codat, method: str, path_part: str) -> list[dict[str, Any]]:
    """The stand-in's log of API requests with this method whose path contains `path_part`."""
    return [
        r for r in codat.state()["requests"] if r["method"] == method and path_part in r["path"]
    ]


def linked_without_serve(cli: Cli, codat: Codat, name: str) -> dict[str, Any]:
    """A company in `linked` with its intent open, and no partner connection yet.

    `onboard` records the company and its PendingAuth connection; the customer authorizes it in
    the stand-in (webhooks off, nothing listens anyway); `reconcile` records the Linked status and
    opens the intent to create the partner expense connection, which nobody carries out yet.
    """
    onboarded = cli.onboard(name)
    codat.authorize(onboarded["companyId"], onboarded["connectionId"])
    cli.ok("reconcile", "--company", onboarded["companyId"])
    state, _ = stored_state(cli.database_url, onboarded["companyId"])
    assert state == "linked", (state, onboarded)
    return onboarded


def ready_with_serve(codat: Codat, serve: Serve, name: str) -> dict[str, Any]:
    """A company taken to `ready` by the live path: stand-in webhooks into `serve`."""
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"], "gbol")
    wait_for(lambda: serve.state_of(company["id"]) == "pending_auth", what="pending_auth")
    codat.authorize(company["id"], connection["id"])
    document = serve.wait_state(company["id"], "ready")
    return {"company": company, "connection": connection, "document": document}


def without_times(document: dict[str, Any]) -> dict[str, Any]:
    """A status document without the fields a rebuild legitimately rewrites (`updatedAt`)."""
    return {key: value for key, value in document.items() if key != "updatedAt"}

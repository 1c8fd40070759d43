"""`codat-expenses status`: one company's status document, or a table of companies (read-only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console

from handlers.state import STATES
from processor.cli import tables
from processor.cli.common import CliError, Opened, Refused, example, json_option, opened
from processor.cli.tables import Column, print_table
from processor.http.documents import Health, company_document, summary
from processor.http.explain import row_why, why
from store import Store

COMPANY_COLUMNS = (
    Column("company", whole=True, keep=True),
    Column("state", whole=True, keep=True),
    Column("last error", keep=True),
    Column("accounting", whole=True),
    Column("expense", whole=True),
    Column("name"),
    Column("why"),
)
EVENT_COLUMNS = (
    Column("generated", whole=True, keep=True),
    Column("event", keep=True),
    Column("outcome", whole=True, keep=True),
    Column("message id", whole=True),
    Column("source", whole=True),
)
EVENT_KEYS = ("generatedDate", "eventType", "outcome", "messageId", "source")


@click.command(epilog=example("codat-expenses status --state linked"))
@click.argument("company_id", required=False)
@click.option("--state", help="Only companies in this state.")
@click.option("--failed", is_flag=True, help="Only companies with failed commands.")
@json_option
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def status(
    company_id: str | None, state: str | None, failed: bool, as_json: bool, limit: int
) -> None:
    """Show one company's status document, or a table of companies (read-only)."""
    if state is not None and state not in STATES:
        raise CliError(f"expected --state to be one of {', '.join(STATES)}, found {state!r}")
    with opened(readonly=True) as session:
        if company_id is not None:
            _show_company(session, company_id, as_json)
        else:
            _show_companies(session.store, state, failed, as_json, limit)


def _show_company(session: Opened, company_id: str, as_json: bool) -> None:
    health = Health(silent_after=session.settings.sync_silent_after)
    document = company_document(session.store, company_id, health=health)
    if document is None:
        raise Refused(f"no company {company_id!r} in {session.settings.database}")
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    console = tables.console()
    _print_header(console, document)
    _print_effects(console, document["pending"] + document["failed"])
    rows = [[str(event[key] or "") for key in EVENT_KEYS] for event in document["events"]]
    print_table(EVENT_COLUMNS, rows)


def _print_header(console: Console, document: dict[str, Any]) -> None:
    console.print(f"[bold]{document['id']}[/] {document.get('name') or ''}")
    console.print(f"state: [bold]{document['state']}[/]   updated {document['updatedAt']}")
    accounting = document["accountingConnection"]
    if accounting:
        console.print(
            f"accounting connection: {accounting['id']} {accounting['platformName'] or ''} "
            f"({accounting['platformKey'] or '?'}) {accounting['status']}"
        )
    expense = document["expenseConnection"]
    if expense:
        console.print(f"partner expense connection: {expense['id']} {expense['status']}")
    if document["lastError"]:
        error = document["lastError"]
        console.print(f"[red]last error[/] at {error['at']}: {error['message']}")
    sync = document["sync"]
    if sync["health"]:
        console.print(f"expense syncs: [bold]{sync['health']}[/]")
    console.print(why(document, datetime.now(UTC)), markup=False, highlight=False)


def _print_effects(console: Console, effects: list[dict[str, Any]]) -> None:
    for effect in effects:
        console.print(
            f"{effect['command']}: {effect['status']} after {effect['attempts']} attempt(s)"
            + (f", next at {effect['nextAttemptAt']}" if effect["nextAttemptAt"] else "")
            + (f": {effect['lastError']}" if effect["lastError"] else "")
        )


def _show_companies(
    store: Store, state: str | None, failed: bool, as_json: bool, limit: int
) -> None:
    rows = _company_rows(store, state, failed, limit)
    if as_json:
        click.echo(json.dumps({"companies": rows}, indent=2))
        return
    counts = store.state_counts()
    total = len(rows) if failed else counts.get(state, 0) if state else sum(counts.values())
    _print_companies(rows, total)
    click.echo(", ".join(f"{name} {counts[name]}" for name in STATES if name in counts))


def _company_rows(store: Store, state: str | None, failed: bool, limit: int) -> list[Any]:
    if failed:
        ids = sorted({effect.company_id for effect in store.failed_effects()})
        documents = [company_document(store, company_id, event_limit=0) for company_id in ids]
        return [d for d in documents if d is not None and (state is None or d["state"] == state)]
    page = store.companies(state=state, limit=limit, after=None)
    return [summary(row, row.company_id) for row in page.companies]


def _print_companies(rows: list[dict[str, Any]], total: int) -> None:
    now = datetime.now(UTC)
    print_table(COMPANY_COLUMNS, [_table_row(row, now) for row in rows])
    noun = "company" if total == 1 else "companies"
    if len(rows) < total:
        click.echo(f"{len(rows)} of {total} {noun} shown; --limit N to show more")
    else:
        click.echo(f"{len(rows)} {noun}")


def _table_row(row: dict[str, Any], now: datetime) -> list[str]:
    accounting = row["accountingConnection"] or {}
    expense = row["expenseConnection"] or {}
    return [
        row["id"],
        row["state"] or "",
        _errors(row),
        accounting.get("status", ""),
        expense.get("status", ""),
        row["name"] or "",
        row_why(row, now),
    ]


def _errors(row: dict[str, Any]) -> str:
    """The last error, then the reason of each failed command it does not already say."""
    error: str = (row["lastError"] or {}).get("message") or ""
    for effect in row.get("failed", []):
        reason = effect.get("lastError")
        if reason and reason not in error:
            error = f"{error}; {reason}" if error else reason
    return error

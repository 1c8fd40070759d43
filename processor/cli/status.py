"""`codat-expenses status`: one company's status document, or a table of companies."""

from __future__ import annotations

import json
from typing import Any

import click

from processor.cli import tables
from processor.cli.common import fail, load_settings, open_store
from processor.cli.tables import Column, print_table
from processor.http.documents import company_document, summary
from store import Store


@click.command()
@click.argument("company_id", required=False)
@click.option("--state", help="Only companies in this state.")
@click.option("--failed", is_flag=True, help="Only companies with failed commands.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def status(
    company_id: str | None, state: str | None, failed: bool, as_json: bool, limit: int
) -> None:
    """Show one company's status document, or a table of companies (read-only)."""
    from handlers.state import STATES

    if state is not None and state not in STATES:
        fail(f"expected --state to be one of {', '.join(STATES)}, found {state!r}")
    settings = load_settings()
    store = open_store(settings, readonly=True)
    try:
        if company_id is not None:
            document = company_document(store, company_id)
            if document is None:
                fail(f"no company {company_id!r} in {settings.database_path}", 1)
            _print_company(document, as_json)
            return
        rows = _company_rows(store, state, failed, limit)
        counts = store.state_counts()
        total = len(rows) if failed else counts.get(state, 0) if state else sum(counts.values())
        _print_table(rows, as_json, total)
        if not as_json:
            click.echo(", ".join(f"{name} {counts[name]}" for name in STATES if name in counts))
    finally:
        store.close()


def _company_rows(store: Store, state: str | None, failed: bool, limit: int) -> list[Any]:
    if failed:
        ids = sorted({effect.company_id for effect in store.failed_effects()})
        documents = [company_document(store, company_id, event_limit=0) for company_id in ids]
        return [d for d in documents if d is not None and (state is None or d["state"] == state)]
    page = store.companies(state=state, limit=limit, after=None)
    return [summary(row, row.company_id) for row in page.companies]


def _print_company(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    console = tables.console()
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
    for effect in document["pending"] + document["failed"]:
        console.print(
            f"{effect['command']}: {effect['status']} after {effect['attempts']} attempt(s)"
            + (f", next at {effect['nextAttemptAt']}" if effect["nextAttemptAt"] else "")
            + (f": {effect['lastError']}" if effect["lastError"] else "")
        )
    columns = (
        Column("generated", whole=True, keep=True),
        Column("event", keep=True),
        Column("outcome", whole=True, keep=True),
        Column("message id", whole=True),
        Column("source", whole=True),
    )
    events = document["events"]
    keys = ("generatedDate", "eventType", "outcome", "messageId", "source")
    print_table(columns, [[str(event[key] or "") for key in keys] for event in events])


COMPANY_COLUMNS = (
    Column("company", whole=True, keep=True),
    Column("state", whole=True, keep=True),
    Column("last error", keep=True),
    Column("accounting", whole=True),
    Column("expense", whole=True),
    Column("name"),
)


def _print_table(rows: list[dict[str, Any]], as_json: bool, total: int) -> None:
    if as_json:
        click.echo(json.dumps({"companies": rows}, indent=2))
        return
    print_table(COMPANY_COLUMNS, [_table_row(row) for row in rows])
    noun = "company" if total == 1 else "companies"
    if len(rows) < total:
        click.echo(f"{len(rows)} of {total} {noun} shown; --limit N to show more")
    else:
        click.echo(f"{len(rows)} {noun}")


def _table_row(row: dict[str, Any]) -> list[str]:
    accounting = row["accountingConnection"] or {}
    expense = row["expenseConnection"] or {}
    error = (row["lastError"] or {}).get("message") or ""
    for effect in row.get("failed", []):
        reason = effect.get("lastError")
        if reason and reason not in error:
            error = f"{error}; {reason}" if error else reason
    return [
        row["id"],
        row["state"] or "",
        error,
        accounting.get("status", ""),
        expense.get("status", ""),
        row["name"] or "",
    ]

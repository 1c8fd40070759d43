"""The `codat-expenses` command line: a thin layer over the processor's Python API."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, NoReturn

import click

from processor import config
from processor.documents import company_document, summary
from store import Store, StoreError

log = logging.getLogger("processor")


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"codat-expenses: {message}", err=True)
    sys.exit(code)


def load_settings(*, require_codat: bool) -> config.Settings:
    try:
        return config.load(require_codat=require_codat)
    except config.ConfigError as error:
        fail(str(error))


def open_store(settings: config.Settings, *, readonly: bool) -> Store:
    try:
        return Store.open(settings.database_path, readonly=readonly)
    except StoreError as error:
        fail(str(error))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Onboard customers onto Codat's Sync for Expenses, driven by Codat's webhooks."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=None, help="Port to listen on [default: $PORT or 8000].")
def serve(host: str, port: int | None) -> None:
    """Run the HTTP app and the worker, in one process."""
    import uvicorn

    from processor.app import create_app

    settings = load_settings(require_codat=True)
    # Open (and migrate) the store before binding, so a bad database stops start-up at once.
    open_store(settings, readonly=False).close()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port or settings.port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


@main.command()
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
    settings = load_settings(require_codat=False)
    store = open_store(settings, readonly=True)
    try:
        if company_id is not None:
            document = company_document(store, company_id)
            if document is None:
                fail(f"no company {company_id!r} in {settings.database_path}", 1)
            _print_company(document, as_json)
            return
        rows = _company_rows(store, state, failed, limit)
        _print_table(rows, as_json)
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
    from rich.console import Console
    from rich.table import Table

    console = Console()
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
    table = Table("generated", "event", "source", "outcome", "message id")
    for event in document["events"]:
        table.add_row(
            event["generatedDate"],
            event["eventType"],
            event["source"],
            event["outcome"],
            event["messageId"],
        )
    console.print(table)


def _print_table(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"companies": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("company", "name", "state", "accounting", "expense", "last error")
    for row in rows:
        accounting = row["accountingConnection"] or {}
        expense = row["expenseConnection"] or {}
        error = row["lastError"] or {}
        table.add_row(
            row["id"],
            row["name"] or "",
            row["state"] or "",
            accounting.get("status", ""),
            expense.get("status", ""),
            (error.get("message") or "")[:60],
        )
    Console().print(table)
    click.echo(f"{len(rows)} compan{'y' if len(rows) == 1 else 'ies'}")


@main.command()
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def demo(timeout: float) -> None:
    """A complete onboarding, offline, against a local stand-in for Codat."""
    from processor.demo import run_demo

    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run_demo(timeout))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8100, show_default=True)
@click.option("--api-key", envvar="CODAT_API_KEY", required=True, help="Key clients must send.")
@click.option("--webhook-url", default=None, help="Where to deliver signed webhooks.")
@click.option(
    "--secret", "secrets", multiple=True, envvar="CODAT_WEBHOOK_SECRET", help="Signing secret(s)."
)
def sandbox(
    host: str, port: int, api_key: str, webhook_url: str | None, secrets: tuple[str, ...]
) -> None:
    """Run the local stand-in for Codat (for trials and fault drills; loopback only)."""
    from processor.sandbox import serve_sandbox

    split = [part for secret in secrets for part in secret.replace(",", " ").split()]
    serve_sandbox(host, port, api_key, webhook_url, split)

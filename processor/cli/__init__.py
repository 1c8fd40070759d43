"""The `codat-expenses` command line: a thin layer over the processor's Python API."""

from __future__ import annotations

import json
import logging
import os
import sys
from importlib import metadata
from typing import Any, NoReturn

import click

from processor import config
from processor.cli import tables
from processor.cli.tables import Column, print_table
from processor.http.documents import company_document, summary
from store import Store, StoreError

log = logging.getLogger("processor")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def fail(message: str, code: int = 2) -> NoReturn:
    for line in message.splitlines():
        click.echo(f"codat-expenses: {line}", err=True)
    sys.exit(code)


def load_settings(*, require: tuple[str, ...] = ()) -> config.Settings:
    try:
        return config.load(require=require)
    except config.ConfigError as error:
        fail(str(error))


def open_store(settings: config.Settings, *, readonly: bool, must_exist: bool = True) -> Store:
    """Open the store; only `serve` and `onboard` may create a new database file."""
    if must_exist and not settings.database_path.exists():
        fail(f"database file {str(settings.database_path)!r} does not exist (check DATABASE_URL)")
    try:
        return Store.open(settings.database_path, readonly=readonly)
    except StoreError as error:
        fail(str(error))


def _version() -> str:
    try:
        return metadata.version("codat-expenses")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="codat-expenses", prog_name="codat-expenses")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Onboard customers onto Codat's Sync for Expenses, driven by Codat's webhooks."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP request is noise on a command line; our own log lines say what matters.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=None, help="Port to listen on [default: $PORT or 8000].")
def serve(host: str, port: int | None) -> None:
    """Run the HTTP app and the worker, in one process."""
    import uvicorn

    from processor.app import create_app

    settings = load_settings(require=config.SERVE_REQUIRES)
    # Open (and migrate) the store before binding, so a bad database stops start-up at once.
    open_store(settings, readonly=False, must_exist=False).close()
    log.info("%s", config.describe(settings, os.environ, version=_version()))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=settings.port if port is None else port,
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


@main.command()
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def demo(timeout: float) -> None:
    """A complete onboarding, offline, against a local stand-in for Codat."""
    from processor.demo import run_demo

    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run_demo(timeout))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8100, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    envvar="CODAT_API_KEY",
    show_envvar=True,
    required=True,
    help="Key clients must send (Basic auth), as serve's CODAT_API_KEY.",
)
@click.option(
    "--webhook-url",
    default=None,
    help="Where to deliver signed webhooks, e.g. http://127.0.0.1:8000/webhooks/codat.",
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    envvar="CODAT_WEBHOOK_SECRET",
    show_envvar=True,
    help="whsec_ signing secret(s), as serve's CODAT_WEBHOOK_SECRET (`codat-expenses secret`).",
)
def sandbox(
    host: str, port: int, api_key: str, webhook_url: str | None, secrets: tuple[str, ...]
) -> None:
    """Run the local stand-in for Codat (for trials and fault drills; loopback only).

    Codat's onboarding API (companies, connections, partner expense connection) with Basic auth
    and Idempotency-Key, and Svix-signed webhooks to --webhook-url with retries. Every delivery
    attempt is logged on stderr with its answer.

    \b
    Admin routes (no auth; JSON bodies):
      POST   /_sandbox/companies/{companyId}/connections/{connectionId}/authorize
             the customer completes Link (PendingAuth, Unlinked or Deauthorized -> Linked)
      POST   /_sandbox/companies/{companyId}/connections/{connectionId}/fail
             Link fails: {"errorMessage": "..."} (optional)
      POST   /_sandbox/companies/{companyId}/connections/{connectionId}/deauthorize
             Linked -> Deauthorized
      DELETE /_sandbox/companies/{companyId}/connections/{connectionId}
             delete the connection
      DELETE /_sandbox/companies/{companyId}
             delete the company
      POST   /_sandbox/companies/{companyId}/legacy
             send this company's webhooks in the old rules format: {"legacy": true}
      GET    /_sandbox/state
             companies, connections, webhook bodies, deliveries, API requests, faults
      POST   /_sandbox/config
             {"webhookUrl", "secrets", "autoWebhooks", "retryDelays", "headerPrefix"}
      POST   /_sandbox/faults
             add fault rules (a JSON list; see the README)
      DELETE /_sandbox/faults
             clear the fault rules
      POST   /_sandbox/webhooks/send
             send a webhook: {"body": {...}} or {"raw": "..."}, "messageId", "repeat"
    """
    from processor.sandbox import serve_sandbox

    if host not in LOOPBACK_HOSTS:
        fail(
            f"expected --host to be a loopback address ({', '.join(LOOPBACK_HOSTS)}), found "
            f"{host!r}: the sandbox's admin routes have no authentication"
        )
    split = [part for secret in secrets for part in secret.replace(",", " ").split()]
    try:
        config.check_webhook_secrets(split)
    except config.ConfigError as error:
        source = click.get_current_context().get_parameter_source("secrets")
        from_option = source is click.core.ParameterSource.COMMANDLINE
        prefix = "--secret: " if from_option else ""
        fail("\n".join(prefix + line for line in str(error).splitlines()))
    if webhook_url is not None:
        if not webhook_url.startswith(("http://", "https://")):
            fail(
                "--webhook-url must be an http(s) URL such as "
                f"http://127.0.0.1:8000/webhooks/codat, found {webhook_url!r}"
            )
        if not split:
            fail(
                "--webhook-url needs a signing secret: expected --secret or CODAT_WEBHOOK_SECRET "
                "(make one with `codat-expenses secret`), found none"
            )
    serve_sandbox(host, port, api_key, webhook_url, split)


def _codat(settings: config.Settings) -> Any:
    from processor.codat.client import CodatClient, new_client

    return CodatClient(
        new_client(settings.base_url, settings.api_key, timeout=settings.codat_timeout)
    )


@main.command()
@click.option("--company", "company_id", help="Only this company's events.")
@click.option("--event", "event_id", help="Only this event (event id or webhook message id).")
@click.option("--since", help="Only events generated at or after this ISO 8601 date.")
@click.option("--type", "event_type", help="Only events of this type, e.g. connection.connected.")
@click.option("--failed", is_flag=True, help="Only events whose commands failed; retry them.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
def replay(
    company_id: str | None,
    event_id: str | None,
    since: str | None,
    event_type: str | None,
    failed: bool,
    dry_run: bool,
) -> None:
    """Re-run stored events through the handlers; carry out only the commands still needed.

    Every company with a selected event is rebuilt from its whole event log. Exit status:
    0 done, 1 some commands failed (listed), 2 bad arguments.
    """
    import asyncio

    from processor import clock
    from processor.work.replay import Selection, plan, select_companies, unknown_selector
    from processor.work.replay import replay as run_replay

    if since is not None:
        try:
            since = clock.normalize(since)
        except clock.InvalidDate as error:
            fail(f"--since: {error}")
    selection = Selection(company_id, event_id, since, event_type, failed)
    settings = load_settings(require=() if dry_run else ("CODAT_API_KEY",))
    # Selected on a reader: a refusal, "nothing to do" and a dry run write nothing at all.
    reader = open_store(settings, readonly=True)
    try:
        companies, events = select_companies(reader, selection)
        if not companies and (reason := unknown_selector(reader, selection)):
            fail(reason)
        if dry_run:
            _print_plans([plan(reader, c) for c in companies], events)
            return
        if not companies:
            click.echo(f"no stored events match ({events} events, 0 companies); nothing to do")
            return
    finally:
        reader.close()
    store = open_store(settings, readonly=False)
    try:
        codat = _codat(settings)
        with _progress(len(companies)) as advance:
            summary = asyncio.run(
                _closing(
                    codat,
                    run_replay(store, codat, settings, companies, failed=failed, progress=advance),
                )
            )
    finally:
        store.close()
    click.echo(
        f"replayed {summary.events} events of {summary.companies} companies: "
        f"{summary.changed} changed state, {summary.commands} commands run, "
        f"{len(summary.failures)} failures"
    )
    for company in summary.waiting:
        click.echo(f"  {company}: a command is in progress in another process; left to it")
    for failure in summary.failures:
        click.echo(f"  failed: {failure}", err=True)
    sys.exit(1 if summary.failures else 0)


async def _closing(codat: Any, work: Any) -> Any:
    try:
        return await work
    finally:
        await codat.http.aclose()


def _progress(total: int) -> Any:
    import contextlib

    @contextlib.contextmanager
    def plain() -> Any:
        done = 0

        def advance(company_id: str) -> None:
            nonlocal done
            done += 1
            if done == total or done % 100 == 0:
                click.echo(f"replayed {done}/{total} companies")

        yield advance

    if not sys.stderr.isatty():
        return plain()

    @contextlib.contextmanager
    def bar() -> Any:
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task("replaying", total=total)
            yield lambda company_id: progress.advance(task)

    return bar()


def _print_plans(plans: list[Any], events: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("company", "state now", "after replay", "events", "commands it would run")
    for item in plans:
        table.add_row(
            item.company_id,
            item.state_now or "-",
            item.state_after,
            str(item.events),
            ", ".join(item.commands) or "-",
        )
    Console().print(table)
    changes = sum(1 for p in plans if p.state_now != p.state_after)
    click.echo(f"dry run: {events} matching events, {len(plans)} companies, {changes} would change")


@main.command()
@click.option("--name", required=True, help="The customer's company name.")
@click.option("--platform", required=True, help="Platform key (gbol) or name (xero).")
@click.option("--company", "company_id", help="Continue an earlier run for this company id.")
@click.option(
    "--force",
    is_flag=True,
    help="Create even if the name is already stored or the company already has a PendingAuth "
    "or Linked accounting connection.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def onboard(name: str, platform: str, company_id: str | None, force: bool, as_json: bool) -> None:
    """Create the company and its accounting connection; print the Link URL.

    Exit status: 0 done, 1 Codat refused or a company or connection already exists (the
    message says which; --force goes ahead), 2 bad arguments.
    """
    import asyncio

    from processor.codat.platforms import UnknownPlatform, resolve_platform
    from processor.work.onboarding import OnboardingError
    from processor.work.onboarding import onboard as run_onboard

    try:
        platform_key, _ = resolve_platform(platform)
    except UnknownPlatform as error:
        fail(str(error))
    settings = load_settings(require=("CODAT_API_KEY",))
    store = open_store(settings, readonly=False, must_exist=False)
    codat = _codat(settings)
    try:
        result = asyncio.run(
            _closing(
                codat,
                run_onboard(
                    store,
                    codat,
                    name=name,
                    platform_key=platform_key,
                    company_id=company_id,
                    force=force,
                ),
            )
        )
    except OnboardingError as error:
        if as_json:
            click.echo(json.dumps(error.to_json()))
        fail(str(error), 1)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    click.echo(f"company {result.company_id} ({result.company_name}): {result.state}")
    click.echo(f"accounting connection {result.connection_id} ({result.platform_key})")
    click.echo(f"Link URL: {result.link_url}")


@main.command()
@click.argument("company_id")
def unlink(company_id: str) -> None:
    """Unlink the company's accounting connection (Codat: PATCH status Unlinked)."""
    import asyncio

    from processor.work.onboarding import OnboardingError
    from processor.work.onboarding import unlink as run_unlink

    settings = load_settings(require=("CODAT_API_KEY",))
    store = open_store(settings, readonly=False)
    codat = _codat(settings)
    try:
        connection = asyncio.run(_closing(codat, run_unlink(store, codat, company_id)))
    except OnboardingError as error:
        fail(str(error), 1)
    finally:
        store.close()
    click.echo(f"connection {connection['id']} of company {company_id} is {connection['status']}")


@main.command()
@click.option("--company", "company_id", help="Only this company.")
def reconcile(company_id: str | None) -> None:
    """Compare stored state with Codat's and record what differs (heals lost webhooks)."""
    import asyncio

    from processor import clock
    from processor.intake.writer import DirectWriter
    from processor.work.reconcile import due_companies
    from processor.work.reconcile import reconcile as run_reconcile

    settings = load_settings(require=("CODAT_API_KEY",))
    if company_id is not None:
        # Checked on a reader first: opening the store for writing commits a heartbeat.
        reader = open_store(settings, readonly=True)
        try:
            if not reader.knows_company(company_id):
                fail(
                    f"no company {company_id!r} in {settings.database_path}; "
                    "expected a stored company id"
                )
        finally:
            reader.close()
    store = open_store(settings, readonly=False)
    codat = _codat(settings)
    try:
        companies = [company_id] if company_id else due_companies(store, clock.now())
        sweep = asyncio.run(_closing(codat, run_reconcile(DirectWriter(store), codat, companies)))
    finally:
        store.close()
    click.echo(
        f"checked {sweep.checked} companies against Codat: {len(sweep.corrected)} corrected, "
        f"{len(sweep.errors)} errors"
    )
    for company in sweep.corrected:
        click.echo(f"  corrected {company}")
    for error in sweep.errors:
        click.echo(f"  error: {error}", err=True)
    sys.exit(1 if sweep.errors else 0)


@main.command("secret")
def secret_command() -> None:
    """Print a fresh webhook signing secret (whsec_<base64>) for serve and sandbox."""
    from processor.sandbox.sender import generate_secret

    click.echo(generate_secret())

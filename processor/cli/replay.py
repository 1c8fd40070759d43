"""`codat-expenses replay`: re-run stored events through the handlers."""

from __future__ import annotations

import sys
from typing import Any

import click

from processor.cli.common import _closing, _codat, fail, load_settings, open_store


@click.command()
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

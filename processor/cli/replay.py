"""`codat-expenses replay`: re-run stored events through the handlers."""

from __future__ import annotations

import gc
import logging
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import TYPE_CHECKING

import click

from processor import clock
from processor.cli.common import API_KEY, CliError, company_option, example, opened
from processor.work.planning import Planners, helpers_for
from processor.work.replay import (
    Matched,
    Plan,
    Run,
    Selection,
    Summary,
    batches,
    count_matching,
    plans,
    selected_companies,
    unknown_selector,
)
from processor.work.replay import replay as run_replay
from store import Store

if TYPE_CHECKING:
    from processor.codat.client import CodatClient
    from processor.config import Settings

log = logging.getLogger(__name__)

Advance = Callable[[str], None]


@click.command(epilog=example("codat-expenses replay --failed --dry-run"))
@company_option("Only this company's events.")
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
    selection = Selection(company_id, event_id, _iso_date(since), event_type, failed)
    # What exists now (the imports) outlives the replay: frozen, out of the collector's way.
    # The rebuilds' millions of short-lived records die by reference count, none in a cycle,
    # so the collector is off while they come and go (its passes over them took 5% of a
    # replay of 200,000 events even with a young generation of 100,000 objects; peak RSS is
    # the same without them). It is on while commands run (`_collecting`): a Codat client,
    # its tasks and its errors do make cycles.
    gc.freeze()
    gc.disable()
    try:
        _replay(selection, dry_run)
    finally:
        gc.enable()
        gc.unfreeze()


def _collecting(run: Run) -> Run:
    """`run`, with the collector on while it runs."""

    def run_collecting(work: Callable[[CodatClient], Awaitable[None]]) -> None:
        gc.enable()
        try:
            run(work)
        finally:
            gc.disable()

    return run_collecting


def _replay(selection: Selection, dry_run: bool) -> None:
    company_id, failed = selection.company_id, selection.failed
    # Selected on a reader: a refusal, "nothing to do" and a dry run write nothing at all.
    with opened(() if dry_run else API_KEY, readonly=True) as reader:
        matched = count_matching(reader.store, selection)
        if not matched.companies and (reason := unknown_selector(reader.store, selection)):
            raise CliError(reason)
        if dry_run:
            with _planners(reader.store, reader.settings, selection, matched) as planners:
                _dry_run(reader.store, selection, matched, planners)
            return
    if not matched.companies:
        click.echo(f"no stored events match ({matched.events} events, 0 companies); nothing to do")
        return
    with (
        opened(readonly=False, settings=reader.settings) as session,
        _planners(session.store, session.settings, selection, matched) as planners,
        _progress(matched.companies) as advance,
    ):
        summary = run_replay(
            session.store,
            session.settings,
            selected_companies(session.store, selection),
            run=_collecting(session.run),
            failed=failed,
            key_range=selection.everything,
            progress=advance,
            planners=planners,
        )
    log.info(
        "replay: %d events of %d companies, %d changed state, %d commands, %d failures",
        summary.events,
        summary.companies,
        summary.changed,
        summary.commands,
        len(summary.failures),
        extra={
            "action": "replay",
            "company_id": company_id,
            "events": summary.events,
            "companies": summary.companies,
            "changed": summary.changed,
            "commands": summary.commands,
            "failures": len(summary.failures),
            # Helper processes, the pages they planned that were used, and those read again
            # because something else wrote to the store meanwhile.
            "helpers": planners.processes if planners else 0,
            "pages_planned": planners.applied if planners else 0,
            "pages_reread": planners.reread if planners else 0,
        },
    )
    _print_summary(summary)
    if summary.failures:
        sys.exit(1)


@contextmanager
def _planners(
    store: Store, settings: Settings, selection: Selection, matched: Matched
) -> Iterator[Planners | None]:
    """Helper processes for a full replay of a large SQLite store (REPLAY_PROCESSES)."""
    processes = helpers_for(settings.replay_processes, matched.companies)
    if not (processes and selection.everything and store.commits_elsewhere() is not None):
        yield None
        return
    with Planners(settings.database_url, processes) as planners:
        yield planners


def _iso_date(since: str | None) -> str | None:
    if since is None:
        return None
    try:
        return clock.normalize(since)
    except clock.InvalidDate as error:
        raise CliError(f"--since: {error}") from None


def _progress(total: int) -> AbstractContextManager[Advance]:
    """A progress bar on a terminal; elsewhere a line every 100 companies and at the end."""
    return _bar(total) if sys.stderr.isatty() else _lines(total)


@contextmanager
def _lines(total: int) -> Iterator[Advance]:
    done = 0

    def advance(company_id: str) -> None:
        nonlocal done
        done += 1
        if done == total or done % 100 == 0:
            click.echo(f"replayed {done}/{total} companies")

    yield advance


@contextmanager
def _bar(total: int) -> Iterator[Advance]:
    from rich.progress import Progress  # (imported when used: a tenth of replay's start-up)

    with Progress(transient=True) as progress:
        task = progress.add_task("replaying", total=total)
        yield lambda company_id: progress.advance(task)


# Up to this many companies, a dry run shows a table of every one; beyond, only the companies
# it would change or run commands for (at most LISTED_CHANGES lines), then the totals.
TABLE_LIMIT = 200
LISTED_CHANGES = 1000


def _dry_run(
    store: Store, selection: Selection, matched: Matched, planners: Planners | None
) -> None:
    """Plan every selected company, a batch at a time, reading only."""
    if matched.companies <= TABLE_LIMIT:
        everything = plans(store, list(selected_companies(store, selection)))
        _print_plans(everything)
        changes = sum(1 for p in everything if p.state_now != p.state_after)
        companies = len(everything)
    else:
        pages = batches(selected_companies(store, selection))
        if planners is not None:
            whole = partial(plans, key_range=True)  # (sent to the helpers by name)
            planned = (
                found if found is not None else whole(store, page)
                for page, _, found in planners.ahead(whole, pages)
            )
        else:
            key_range = selection.everything
            planned = (plans(store, page, key_range=key_range) for page in pages)
        companies, changes = _print_changes(planned)
    click.echo(
        f"dry run: {matched.events} matching events, {companies} companies, {changes} would change"
    )


def _print_plans(found: list[Plan]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("company", "state now", "after replay", "events", "commands it would run")
    for item in found:
        table.add_row(
            item.company_id,
            item.state_now or "-",
            item.state_after,
            str(item.events),
            ", ".join(item.commands) or "-",
        )
    Console().print(table)


def _print_changes(planned: Iterable[list[Plan]]) -> tuple[int, int]:
    """Plain lines for the companies a replay would change or run commands for; the totals."""
    companies = changes = listed = 0
    moves: Counter[tuple[str, str]] = Counter()
    click.echo("company  state now -> after replay  events  commands it would run")
    for page in planned:
        for item in page:
            companies += 1
            now = item.state_now or "-"
            if item.state_now != item.state_after:
                changes += 1
                moves[now, item.state_after] += 1
            if item.state_now == item.state_after and not item.commands:
                continue
            listed += 1
            if listed <= LISTED_CHANGES:
                click.echo(
                    f"{item.company_id}  {now} -> {item.state_after}  {item.events}  "
                    f"{', '.join(item.commands) or '-'}"
                )
    if listed > LISTED_CHANGES:
        click.echo(f"... and {listed - LISTED_CHANGES} more companies to change or act on")
    if not listed:
        click.echo(f"(none of the {companies} companies would change or run a command)")
    for (before, after), count in sorted(moves.items()):
        click.echo(f"would change {count} companies from {before} to {after}")
    return companies, changes


def _print_summary(summary: Summary) -> None:
    click.echo(
        f"replayed {summary.events} events of {summary.companies} companies: "
        f"{summary.changed} changed state, {summary.commands} commands run, "
        f"{len(summary.failures)} failures"
    )
    for company in summary.waiting:
        click.echo(f"  {company}: a command is in progress in another process; left to it")
    for failure in summary.failures:
        click.echo(f"  failed: {failure}", err=True)

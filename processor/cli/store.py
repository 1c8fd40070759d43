"""`codat-expenses store copy` and `store check`: moving a deployment to another store.

`copy` copies the event log, company state and effects of one store into an empty one (SQLite
to PostgreSQL is the case that matters), in batches, then checks the copy: the same number of
rows in every table, and each company's state rebuilt from the copied log equal to the copied
state (in transactions that are rolled back: the copy is not changed). `check` runs the same
check again on an existing copy. No URL is ever printed with its password.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from handlers.state import CompanyState
from handlers.transitions import fold, initial_state
from processor import clock
from processor.cli.common import CliError, Refused, example, json_option
from processor.work.folding import rebuild, to_event
from store import StoreError, check_url, describe_url, open_store
from store.copying import (
    BATCH,
    TABLES,
    CopyResult,
    CopyStore,
    TargetNotEmpty,
    copy_all,
    copyable,
    counts,
    open_empty_target,
    open_source,
)
from store.urls import redact_url

CHECK_BATCH = 200  # companies rebuilt per rolled-back transaction

Advance = Callable[[int], None]
Start = Callable[[str, int], Advance]
"""Starts a bar: `start(description, total)` gives the function that advances it."""


@dataclass
class CheckResult:
    """What the check of a copy found."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    companies: int = 0
    different: list[str] = field(default_factory=list)
    with_pending_events: list[str] = field(default_factory=list)

    @property
    def count_mismatches(self) -> list[str]:
        return [t for t, n in self.counts.items() if n["source"] != n["target"]]

    @property
    def ok(self) -> bool:
        return not self.different and not self.count_mismatches

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "companies": self.companies,
            "different": self.different,
            "withPendingEvents": self.with_pending_events,
        }


def check_copy(
    source: CopyStore, target: CopyStore, progress: Advance = lambda companies: None
) -> CheckResult:
    """Compare the copy with its source: rows per table, and each company's copied state with
    the state rebuilt from the copied log (`rebuild`, in a transaction rolled back).

    A company with events not folded yet (the source's `serve` stopped before folding them) is
    compared with the fold of its folded events only, which is what its state holds."""
    result = CheckResult()
    source_counts, target_counts = counts(source), counts(target)
    result.counts = {t: {"source": source_counts[t], "target": target_counts[t]} for t in TABLES}
    ids = target.company_ids()
    result.companies = len(ids)
    for start in range(0, len(ids), CHECK_BATCH):
        target.begin()
        try:
            for company_id in ids[start : start + CHECK_BATCH]:
                if not _rebuilds_to_its_state(target, company_id, result):
                    result.different.append(company_id)
        finally:
            target.rollback()
        progress(len(ids[start : start + CHECK_BATCH]))
    return result


def _rebuilds_to_its_state(store: CopyStore, company_id: str, result: CheckResult) -> bool:
    row = store.company(company_id)
    copied = CompanyState.from_dict(row.data) if row is not None else None
    if store.pending_events(company_id):
        result.with_pending_events.append(company_id)
        folded = store.folded_events(company_id)
        if not folded:
            return copied is None
        expected, _ = fold(initial_state(company_id), [to_event(e) for e in folded])
        return copied == expected
    rebuild(store, company_id, clock.now())
    rebuilt = store.company(company_id)
    return copied == (CompanyState.from_dict(rebuilt.data) if rebuilt is not None else None)


@click.group(name="store", epilog=example("codat-expenses store copy --help"))
def store_group() -> None:
    """Move a deployment: copy a whole store into an empty one, and check the copy."""


from_option = click.option(
    "--from",
    "source_url",
    required=True,
    metavar="URL",
    help="The store to copy from, e.g. sqlite:///processor.db (only read).",
)
to_option = click.option(
    "--to",
    "target_url",
    required=True,
    metavar="URL",
    help="The store to copy into, e.g. postgresql://user:password@host:5432/database.",
)


@store_group.command(
    epilog=example(
        "codat-expenses store copy --from sqlite:///processor.db "
        "--to postgresql://app@db.internal:5432/expenses"
    )
)
@from_option
@to_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=BATCH,
    show_default=True,
    help="Rows per transaction on the target.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@json_option
def copy(source_url: str, target_url: str, batch_size: int, quiet: bool, as_json: bool) -> None:
    """Copy the event log, company state and effects into an EMPTY store, then check the copy.

    Every column is copied, event seqs and effect ids included; claims on effects are cleared.
    Stop `serve` on the source first. Exit status: 0 copied and checked, 1 the target is not
    empty, the copy failed or the check found a difference (named), 2 bad arguments or a
    source that does not exist.
    """
    _check_urls(source_url, target_url)
    with _source(source_url) as source:
        try:
            target = open_empty_target(target_url)
        except TargetNotEmpty as error:
            raise Refused(f"{error} (nothing was written)") from None
        except StoreError as error:
            raise CliError(str(error)) from None
        try:
            total = sum(counts(source).values())
            with _progress(quiet or as_json) as start:
                copied = _copy(source, target, target_url, batch_size, start("copying rows", total))
                companies = start("checking companies", len(target.company_ids()))
                check = check_copy(source, target, companies)
        except StoreError as error:
            raise Refused(f"checking the copy failed: {error}") from None
        finally:
            target.close()
    if as_json:
        click.echo(json.dumps(_summary(source_url, target_url, copied, check), indent=2))
    else:
        _print_copied(source_url, target_url, copied)
        _print_check(check)
    if not check.ok:
        sys.exit(1)


@store_group.command(
    epilog=example(
        "codat-expenses store check --from sqlite:///processor.db "
        "--to postgresql://app@db.internal:5432/expenses"
    )
)
@from_option
@to_option
@json_option
def check(source_url: str, target_url: str, as_json: bool) -> None:
    """Check a copy made by `store copy`: rows per table, and state rebuilt from the log.

    The target is only changed in transactions that are rolled back. Exit status: 0 the copy
    matches, 1 a difference (named), 2 bad arguments or a store that does not exist.
    """
    _check_urls(source_url, target_url)
    with _source(source_url) as source:
        try:
            target = copyable(open_store(target_url))
        except StoreError as error:
            raise CliError(str(error)) from None
        try:
            with _progress(as_json) as start:
                companies = start("checking companies", len(target.company_ids()))
                result = check_copy(source, target, companies)
        except StoreError as error:
            raise Refused(f"checking the copy failed: {error}") from None
        finally:
            target.close()
    if as_json:
        click.echo(json.dumps(_summary(source_url, target_url, None, result), indent=2))
    else:
        _print_check(result)
    if not result.ok:
        sys.exit(1)


def _check_urls(source_url: str, target_url: str) -> None:
    for option, url in (("--from", source_url), ("--to", target_url)):
        try:
            check_url(url)
        except StoreError as error:
            raise CliError(f"{option}: {error}") from None


@contextmanager
def _source(url: str) -> Iterator[CopyStore]:
    try:
        source = open_source(url)
    except StoreError as error:
        raise CliError(str(error)) from None
    try:
        yield source
    finally:
        source.close()


def _copy(
    source: CopyStore, target: CopyStore, target_url: str, batch: int, advance: Advance
) -> CopyResult:
    try:
        return copy_all(source, target, batch=batch, progress=lambda table, rows: advance(rows))
    except StoreError as error:
        raise Refused(
            f"the copy failed: {error}\nthe target, {describe_url(target_url)}, holds a partial "
            "copy: empty it (drop and create the database, or delete the file) before copying "
            "again"
        ) from None


@contextmanager
def _progress(quiet: bool) -> Iterator[Start]:
    """Progress bars on a terminal (stderr); nothing on a pipe or with --quiet."""
    if quiet or not sys.stderr.isatty():
        yield lambda description, total: lambda done: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:

        def start(description: str, total: int) -> Advance:
            task = progress.add_task(description, total=total)
            return lambda done: progress.advance(task, done)

        yield start


def _summary(
    source_url: str, target_url: str, copied: CopyResult | None, check: CheckResult
) -> dict[str, Any]:
    summary: dict[str, Any] = {"from": redact_url(source_url), "to": redact_url(target_url)}
    if copied is not None:
        summary["copied"] = copied.copied
        summary["seconds"] = round(copied.seconds, 3)
    summary["check"] = check.to_json()
    return summary


def _print_copied(source_url: str, target_url: str, copied: CopyResult) -> None:
    rows = sum(copied.copied.values())
    rate = f", {rows / copied.seconds:.0f} rows/s" if copied.seconds > 0 and rows else ""
    click.echo(
        f"copied {_listed(copied.copied)} from {describe_url(source_url)} to "
        f"{describe_url(target_url)} in {copied.seconds:.1f} s{rate}"
    )


def _print_check(check: CheckResult) -> None:
    for table in check.count_mismatches:
        n = check.counts[table]
        click.echo(
            f"codat-expenses: check: {table}: {n['source']} rows in the source, "
            f"{n['target']} in the target",
            err=True,
        )
    for company_id in check.different:
        click.echo(
            f"codat-expenses: check: company {company_id}: the state rebuilt from the copied "
            "log differs from the copied state",
            err=True,
        )
    if check.ok:
        click.echo(
            f"check: {_listed({t: n['target'] for t, n in check.counts.items()})} in both "
            f"stores; the state of each of {check.companies} companies rebuilt from the copied "
            "log equals the copied state"
        )
    else:
        click.echo(
            f"check: the copy differs from its source ({len(check.count_mismatches)} tables, "
            f"{len(check.different)} companies)",
            err=True,
        )
    if check.with_pending_events:
        click.echo(
            f"{len(check.with_pending_events)} companies have events not folded yet: serve "
            "folds them on the new store"
        )


def _listed(per_table: dict[str, int]) -> str:
    return ", ".join(f"{count} {table}" for table, count in per_table.items())

"""`codat-expenses reconcile`: compare stored state with Codat's and record what differs."""

from __future__ import annotations

import logging
import sys

import click

from processor import clock, config
from processor.cli.common import API_KEY, CliError, company_option, example, load_settings, opened
from processor.intake.writer import DirectWriter
from processor.work import ratelimits
from processor.work.reconcile import Sweep, due_companies, sync_due_companies
from processor.work.reconcile import reconcile as run_reconcile
from store import Store

log = logging.getLogger(__name__)


@click.command(epilog=example("codat-expenses reconcile"))
@company_option("Only this company.")
def reconcile(company_id: str | None) -> None:
    """Compare stored state with Codat's and record what differs (heals lost webhooks)."""
    settings = load_settings(API_KEY)
    if company_id is not None:
        _check_stored(settings, company_id)
    with opened(readonly=False, settings=settings) as session:
        now = clock.now()
        if company_id is not None:
            companies = [company_id]
            syncs = [company_id] if _follows_syncs(session.store, company_id) else []
        else:
            companies = due_companies(session.store, now)
            syncs = sync_due_companies(session.store, now)
        sweep = session.run(
            lambda codat: run_reconcile(DirectWriter(session.store), codat, companies, syncs=syncs)
        )
    log.info(
        "reconcile: %d checked, %d corrected, %d errors",
        sweep.checked,
        len(sweep.corrected),
        len(sweep.errors),
        extra={
            "action": "reconcile",
            "company_id": company_id,
            "checked": sweep.checked,
            "corrected": list(sweep.corrected),
            "errors": len(sweep.errors),
            "syncs_checked": sweep.syncs_checked,
            "paused_until": sweep.paused.until if sweep.paused else None,
        },
    )
    _print_sweep(sweep)
    if sweep.errors or sweep.paused is not None:
        sys.exit(1)


def _follows_syncs(store: Store, company_id: str) -> bool:
    """On demand, a company's latest sync is read once it is configured or reported a sync."""
    row = store.company(company_id)
    return row is not None and (row.state == "configured" or bool(row.data.get("syncs")))


def _check_stored(settings: config.Settings, company_id: str) -> None:
    # Checked on a reader first: opening the store for writing commits a heartbeat.
    with opened(readonly=True, settings=settings) as reader:
        if not reader.store.knows_company(company_id):
            raise CliError(
                f"no company {company_id!r} in {settings.database}; expected a stored company id"
            )


def _print_sweep(sweep: Sweep) -> None:
    click.echo(
        f"checked {sweep.checked} companies against Codat: {len(sweep.corrected)} corrected, "
        f"{len(sweep.errors)} errors"
    )
    if sweep.syncs_checked:
        click.echo(f"read the latest expense sync of {sweep.syncs_checked} companies")
    if sweep.paused is not None:
        click.echo(
            f"stopped: non-urgent Codat calls are {ratelimits.describe(sweep.paused)}; "
            "run it again after that",
            err=True,
        )
    for company in sweep.corrected:
        click.echo(f"  corrected {company}")
    for error in sweep.errors:
        click.echo(f"  error: {error}", err=True)

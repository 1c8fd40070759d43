"""`codat-expenses reconcile`: compare stored state with Codat's."""

from __future__ import annotations

import sys

import click

from processor.cli.common import _closing, _codat, fail, load_settings, open_store


@click.command()
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

"""`codat-expenses onboard` and `unlink`: a company's accounting connection, made and undone."""

from __future__ import annotations

import json

import click

from processor.cli.common import _closing, _codat, fail, load_settings, open_store


@click.command()
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


@click.command()
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

"""`codat-expenses onboard` and `unlink`: a company's accounting connection, made and undone."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import click

from processor.cli.common import (
    API_KEY,
    CliError,
    Refused,
    company_option,
    example,
    json_option,
    opened,
)
from processor.codat.platforms import UnknownPlatform, resolve_platform
from processor.work.onboarding import Onboarded, OnboardingError
from processor.work.onboarding import onboard as run_onboard
from processor.work.onboarding import unlink as run_unlink

log = logging.getLogger(__name__)


@click.command(epilog=example('codat-expenses onboard --name "Sawayn Group" --platform xero'))
@click.option("--name", required=True, help="The customer's company name.")
@click.option("--platform", required=True, help="Platform key (gbol) or name (xero).")
@company_option("Continue an earlier run for this company id.")
@click.option(
    "--force",
    is_flag=True,
    help="Create even if the name is already stored or the company already has a PendingAuth "
    "or Linked accounting connection.",
)
@json_option
def onboard(name: str, platform: str, company_id: str | None, force: bool, as_json: bool) -> None:
    """Create the company and its accounting connection; print the Link URL.

    Exit status: 0 done, 1 Codat refused or a company or connection already exists (the
    message says which; --force goes ahead), 2 bad arguments.
    """
    platform_key = _platform_key(platform)
    with opened(API_KEY, readonly=False, must_exist=False) as session, _refused(as_json):
        result = session.run(
            lambda codat: run_onboard(
                session.store,
                codat,
                name=name,
                platform_key=platform_key,
                company_id=company_id,
                force=force,
            )
        )
    log.info(
        "onboard: company %s (%s) is %s",
        result.company_id,
        result.company_name,
        result.state,
        extra={
            "action": "onboard",
            "company_id": result.company_id,
            "company_name": result.company_name,
            "connection_id": result.connection_id,
            "platform_key": result.platform_key,
            "state": result.state,
        },
    )
    _print_onboarded(result, as_json)


@click.command(epilog=example("codat-expenses unlink 77921ff9-2491-4dfe-b23b-ff28f3e31e4f"))
@click.argument("company_id")
def unlink(company_id: str) -> None:
    """Unlink the company's accounting connection (Codat: PATCH status Unlinked)."""
    with opened(API_KEY, readonly=False) as session, _refused():
        connection = session.run(lambda codat: run_unlink(session.store, codat, company_id))
    log.info(
        "unlink: connection %s of company %s is %s",
        connection["id"],
        company_id,
        connection["status"],
        extra={
            "action": "unlink",
            "company_id": company_id,
            "connection_id": connection["id"],
            "status": connection["status"],
        },
    )
    click.echo(f"connection {connection['id']} of company {company_id} is {connection['status']}")


def _platform_key(platform: str) -> str:
    try:
        platform_key, _ = resolve_platform(platform)
    except UnknownPlatform as error:
        raise CliError(str(error)) from None
    return platform_key


@contextmanager
def _refused(as_json: bool = False) -> Iterator[None]:
    """Codat or the store refused: exit 1 with the reason (and, with --json, the JSON of it)."""
    try:
        yield
    except OnboardingError as error:
        if as_json:
            click.echo(json.dumps(error.to_json()))
        raise Refused(str(error)) from None


def _print_onboarded(result: Onboarded, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    click.echo(f"company {result.company_id} ({result.company_name}): {result.state}")
    click.echo(f"accounting connection {result.connection_id} ({result.platform_key})")
    click.echo(f"Link URL: {result.link_url}")

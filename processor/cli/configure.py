"""`codat-expenses options` and `configure`: a company's expense configuration, its choices
and the defaults chosen among them."""

from __future__ import annotations

import json
from typing import Any

import click

from processor import clock
from processor.cli import tables
from processor.cli.common import API_KEY, CliError, Opened, Refused, example, json_option, opened
from processor.cli.tables import Column, print_table
from processor.codat.client import CodatError
from processor.http.documents import options_document
from processor.work.configuration import (
    ConfigurationRefused,
    InvalidChoice,
    fetch_options,
)
from processor.work.configuration import configure as run_configure

CHOICE_COLUMNS = (Column("id", whole=True, keep=True), Column("name", keep=True), Column("detail"))


@click.command(epilog=example("codat-expenses options 77921ff9-2491-4dfe-b23b-ff28f3e31e4f"))
@click.argument("company_id")
@click.option("--refresh", is_flag=True, help="Fetch the choices from Codat again first.")
@json_option
def options(company_id: str, refresh: bool, as_json: bool) -> None:
    """Show the choices for a company's expense configuration, as last fetched from Codat.

    Bank accounts, suppliers and customers (and the accounts, tracking categories and tax
    rates of Codat's mapping options). Read-only unless --refresh.
    Exit status: 0 shown, 1 never fetched or Codat refused, 2 bad arguments.
    """
    with opened(API_KEY if refresh else (), readonly=not refresh) as session:
        _check_known(session, company_id)
        if refresh:
            _refresh(session, company_id)
        snapshot = session.store.options(company_id)
    if snapshot is None:
        raise Refused(
            f"no choices stored for company {company_id}: they are fetched once Codat has read "
            f"its data; `codat-expenses options {company_id} --refresh` fetches them now"
        )
    document = options_document(snapshot)
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    _print_options(document)


@click.command(
    epilog=example(
        "codat-expenses configure 77921ff9-... --bank-account ID --supplier ID --customer ID"
    )
)
@click.argument("company_id")
@click.option("--bank-account", required=True, help="Id of one of the company's bank accounts.")
@click.option("--supplier", required=True, help="Id of one of the company's suppliers.")
@click.option("--customer", required=True, help="Id of one of the company's customers.")
@json_option
def configure(
    company_id: str, bank_account: str, supplier: str, customer: str, as_json: bool
) -> None:
    """Set the company's default bank account, supplier and customer for expenses in Codat.

    Each id is checked against the stored choices (`codat-expenses options`) before anything
    is sent; then the configuration is posted, read back and recorded.
    Exit status: 0 configured, 1 refused (data not read yet, no choices stored, Codat
    refused), 2 bad arguments (an id not among the choices, an unknown company).
    """
    chosen = {"bankAccount": bank_account, "supplier": supplier, "customer": customer}
    with opened(API_KEY, readonly=False) as session:
        try:
            result = session.run(
                lambda codat: run_configure(session.store, codat, company_id, chosen)
            )
        except InvalidChoice as error:
            _print_error_json(as_json, error, company_id)
            raise CliError(str(error)) from None
        except ConfigurationRefused as error:
            _print_error_json(as_json, error, company_id)
            raise Refused(str(error)) from None
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    click.echo(f"company {result.company_id}: {result.state}")
    for name, value in result.to_json()["configuration"].items():
        click.echo(f"{name}: {value or 'not set'}")
    click.echo(f"read back from Codat at {result.checked_at}")


def _check_known(session: Opened, company_id: str) -> None:
    if not session.store.knows_company(company_id):
        raise CliError(
            f"no company {company_id!r} in {session.settings.database}; expected a stored "
            "company id"
        )


def _refresh(session: Opened, company_id: str) -> None:
    try:
        data = session.run(lambda codat: fetch_options(codat, company_id))
    except CodatError as error:
        raise Refused(f"cannot fetch the choices of company {company_id}: {error}") from None
    with session.store.transaction():
        session.store.save_options(company_id, data, clock.now())


def _print_error_json(as_json: bool, error: Exception, company_id: str) -> None:
    if as_json:
        click.echo(json.dumps({"error": str(error), "companyId": company_id}))


def _print_options(document: dict[str, Any]) -> None:
    out = tables.console()
    out.print(
        f"choices of company {document['companyId']} fetched {document['fetchedAt']}"
        f" (expense provider: {document['expenseProvider'] or 'none'})",
        highlight=False,
        markup=False,
    )
    sections = (
        ("bank accounts (--bank-account)", document["bankAccounts"], _account_detail),
        ("suppliers (--supplier)", document["suppliers"], _contact_detail),
        ("customers (--customer)", document["customers"], _contact_detail),
    )
    for title, items, detail in sections:
        out.print(f"{title}: {len(items)}", highlight=False, markup=False)
        if items:
            rows = [[str(i["id"]), str(i.get("name") or ""), detail(i)] for i in items]
            print_table(CHOICE_COLUMNS, rows)


def _account_detail(account: dict[str, Any]) -> str:
    parts = (account.get("nominalCode"), account.get("accountType"), account.get("currency"))
    return " ".join(str(part) for part in parts if part)


def _contact_detail(contact: dict[str, Any]) -> str:
    parts = (contact.get("status"), contact.get("defaultCurrency"))
    return " ".join(str(part) for part in parts if part)

"""`codat-expenses syncs`: a company's expense syncs as recorded, failing transactions expanded."""

from __future__ import annotations

import json
from typing import Any

import click

from processor.cli.common import Refused, example, json_option, opened
from processor.cli.tables import Column, print_table
from processor.http.syncs import syncs_document

SYNC_COLUMNS = (
    Column("at", whole=True, keep=True),
    Column("sync", whole=True, keep=True),
    Column("outcome", keep=True),
    Column("failing"),
    Column("transaction", whole=True),
    Column("error"),
)


@click.command(epilog=example("codat-expenses syncs 77921ff9-2491-4dfe-b23b-ff28f3e31e4f"))
@click.argument("company_id")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@json_option
def syncs(company_id: str, limit: int, as_json: bool) -> None:
    """List a company's expense syncs, newest first, each failing transaction on a line.

    Read-only: what Codat's sync webhooks (and the worker's look-ups) recorded.
    Exit status: 0 shown, 1 unknown company, 2 bad arguments.
    """
    with opened(readonly=True) as session:
        document = syncs_document(session.store, company_id, limit=limit)
        if document is None:
            raise Refused(f"no company {company_id!r} in {session.settings.database}")
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    if not document["syncs"]:
        click.echo(f"no expense sync recorded for company {company_id}")
        return
    print_table(SYNC_COLUMNS, [row for entry in document["syncs"] for row in _rows(entry)])


def _rows(entry: dict[str, Any]) -> list[list[str]]:
    sync = entry["sync"]
    failing = [t for t in entry["transactions"] or [] if t["status"] not in ("Completed", None)]
    count = (
        "not listed"
        if sync["failingCount"] is None
        else f"{sync['failingCount']} of {sync['transactionCount']}"
    )
    first = [sync["at"], sync["syncId"], sync["outcome"] or "?", count]
    stage = sync["failureStage"] or sync["error"] or ""
    if not failing:
        return [[*first, "", stage]]
    rows = [[*first, failing[0]["id"], failing[0]["errorMessage"] or failing[0]["status"]]]
    for transaction in failing[1:]:
        detail = transaction["errorMessage"] or transaction["status"]
        rows.append(["", "", "", "", transaction["id"], detail])
    return rows

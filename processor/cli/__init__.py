"""The `codat-expenses` command line: a thin layer over the processor's Python API.

One module per command group; `common` holds what they share.
"""

from __future__ import annotations

import logging

import click

from processor.cli import (
    configure,
    demo,
    onboard,
    reconcile,
    replay,
    sandbox,
    serve,
    status,
    store,
)
from processor.cli.common import example

COMMANDS = (
    configure.configure,
    configure.options,
    demo.demo,
    onboard.onboard,
    onboard.unlink,
    reconcile.reconcile,
    replay.replay,
    sandbox.sandbox,
    sandbox.secret,
    serve.serve,
    status.status,
    store.store_group,
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=example("codat-expenses demo"),
)
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


for command in COMMANDS:
    main.add_command(command)

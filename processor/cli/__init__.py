"""The `codat-expenses` command line: a thin layer over the processor's Python API.

One module per command group; `common` holds what they share.
"""

from __future__ import annotations

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
    syncs,
)
from processor.cli.common import example
from processor.logs import LogConfigError, configure_logs

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
    syncs.syncs,
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=example("codat-expenses demo"),
)
@click.version_option(package_name="codat-expenses", prog_name="codat-expenses")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Onboard customers onto Codat's Sync for Expenses, driven by Codat's webhooks."""
    try:
        # One formatter for every logger (JSON lines or text: LOG_FORMAT, LOG_LEVEL); one line
        # per HTTP request from httpx is noise, our own lines say what matters.
        configure_logs(verbose=verbose)
    except LogConfigError as error:
        raise click.UsageError(str(error)) from None


for command in COMMANDS:
    main.add_command(command)

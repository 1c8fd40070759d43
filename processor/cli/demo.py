"""`codat-expenses demo`: the offline onboarding that processor/demo.py runs."""

from __future__ import annotations

import logging
import sys

import click

from processor.cli.common import example


@click.command(epilog=example("codat-expenses demo --timeout 120"))
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def demo(timeout: float) -> None:
    """A complete onboarding, offline, against a local stand-in for Codat."""
    # Imported here: the demo brings the app and the sandbox (Starlette, svix), slow to import.
    from processor.demo import run_demo

    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run_demo(timeout))

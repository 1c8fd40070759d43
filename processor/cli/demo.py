"""`codat-expenses demo`: the offline onboarding of processor/demo.py."""

from __future__ import annotations

import logging
import sys

import click


@click.command()
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def demo(timeout: float) -> None:
    """A complete onboarding, offline, against a local stand-in for Codat."""
    from processor.demo import run_demo

    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run_demo(timeout))

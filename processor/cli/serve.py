"""`codat-expenses serve`: the HTTP app and the worker."""

from __future__ import annotations

import logging
import os
from importlib import metadata

import click

from processor import config
from processor.cli.common import load_settings, open_store

log = logging.getLogger("processor")


def _version() -> str:
    try:
        return metadata.version("codat-expenses")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=None, help="Port to listen on [default: $PORT or 8000].")
def serve(host: str, port: int | None) -> None:
    """Run the HTTP app and the worker, in one process."""
    import uvicorn

    from processor.app import create_app

    settings = load_settings(require=config.SERVE_REQUIRES)
    # Open (and migrate) the store before binding, so a bad database stops start-up at once.
    open_store(settings, readonly=False, must_exist=False).close()
    log.info("%s", config.describe(settings, os.environ, version=_version()))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=settings.port if port is None else port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )

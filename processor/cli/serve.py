"""`codat-expenses serve`: the HTTP app and the worker, in one process."""

from __future__ import annotations

import logging
import os
from importlib import metadata

import click

from processor import config
from processor.cli.common import example, host_option, opened

log = logging.getLogger("processor")


@click.command(epilog=example("codat-expenses serve --host 0.0.0.0 --port 8000"))
@host_option
@click.option("--port", type=int, default=None, help="Port to listen on [default: $PORT or 8000].")
def serve(host: str, port: int | None) -> None:
    """Run the HTTP app and the worker, in one process."""
    # Imported here: the app (Starlette, svix) and uvicorn would slow every other command's start.
    import uvicorn

    from processor.app import create_app

    # Open (and migrate) the store before binding, so a bad database stops start-up at once.
    with opened(config.SERVE_REQUIRES, readonly=False, must_exist=False) as checked:
        settings = checked.settings
    log.info("%s", config.describe(settings, os.environ, version=_version()))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=settings.port if port is None else port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


def _version() -> str:
    try:
        return metadata.version("codat-expenses")
    except metadata.PackageNotFoundError:
        return "unknown"

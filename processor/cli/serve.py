"""`codat-expenses serve`: the HTTP app and the worker, in one process."""

from __future__ import annotations

import gc
import logging
import os
import time
from importlib import metadata

import click

from processor import config
from processor.cli.common import CliError, example, host_option, load_settings
from store import StoreError, open_store

log = logging.getLogger("processor")
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


@click.command(epilog=example("codat-expenses serve --host 0.0.0.0 --port 8000"))
@host_option
@click.option("--port", type=int, default=None, help="Port to listen on [default: $PORT or 8000].")
def serve(host: str, port: int | None) -> None:
    """Run the HTTP app and the worker, in one process."""
    # Imported here: the app (Starlette, svix) and uvicorn would slow every other command's start.
    import uvicorn

    from processor.app import create_app

    settings = load_settings(config.SERVE_REQUIRES)
    # Open (and migrate) the store before binding, so a bad database stops start-up at once.
    _wait_for_store(settings)
    log.info("%s", config.describe(settings, os.environ, version=_version()))
    app = create_app(settings)
    # What start-up made (modules, the app: 50,000 objects) lives as long as the process: kept
    # out of the collector's full passes, which walked them all with the loop stopped (measured
    # under the intake benchmark: a full pass every 2 s or so, 30 to 74 ms each; 2 ms frozen).
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=settings.port if port is None else port,
        access_log=False,
        log_config=None,  # uvicorn's loggers go through ours (processor.logs)
        timeout_graceful_shutdown=10,
    )


def _wait_for_store(settings: config.Settings) -> None:
    """Open the store once; a server not reachable yet (a database starting beside us) is tried
    again for DATABASE_CONNECT_TIMEOUT_SECONDS, then start-up stops with the last reason."""
    started = time.monotonic()
    delay = RETRY_FIRST
    while True:
        try:
            open_store(settings.database_url, timeout=settings.busy_timeout).close()
            return
        except StoreError as error:
            waited = time.monotonic() - started
            if not error.transient or waited + delay > settings.connect_timeout:
                after = f" (tried for {waited:.0f} s)" if error.transient else ""
                raise CliError(f"{error}{after}") from None
            log.warning("%s; trying again in %.1f s", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)


def _version() -> str:
    try:
        return metadata.version("codat-expenses")
    except metadata.PackageNotFoundError:
        return "unknown"

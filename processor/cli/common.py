"""What every command shares: the one-line error, the settings, the store and the Codat client."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from processor import config
from store import Store, StoreError


def fail(message: str, code: int = 2) -> NoReturn:
    for line in message.splitlines():
        click.echo(f"codat-expenses: {line}", err=True)
    sys.exit(code)


def load_settings(*, require: tuple[str, ...] = ()) -> config.Settings:
    try:
        return config.load(require=require)
    except config.ConfigError as error:
        fail(str(error))


def open_store(settings: config.Settings, *, readonly: bool, must_exist: bool = True) -> Store:
    """Open the store; only `serve` and `onboard` may create a new database file."""
    if must_exist and not settings.database_path.exists():
        fail(f"database file {str(settings.database_path)!r} does not exist (check DATABASE_URL)")
    try:
        return Store.open(settings.database_path, readonly=readonly)
    except StoreError as error:
        fail(str(error))


def _codat(settings: config.Settings) -> Any:
    from processor.codat.client import CodatClient, new_client

    return CodatClient(
        new_client(settings.base_url, settings.api_key, timeout=settings.codat_timeout)
    )


async def _closing(codat: Any, work: Any) -> Any:
    try:
        return await work
    finally:
        await codat.http.aclose()

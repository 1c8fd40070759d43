"""What every command shares: its one-line errors, its options, and what it opens.

`opened` is the one way a command gets its settings, its store and a Codat client, and the
one place that closes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from processor import config
from store import Store, StoreError, missing_store, open_store

if TYPE_CHECKING:
    from processor.codat.calls import Write
    from processor.codat.client import CodatClient

T = TypeVar("T")
FC = TypeVar("FC", bound=Callable[..., Any])

API_KEY = ("CODAT_API_KEY",)
"""What a command that calls Codat requires of the environment."""


class CliError(click.ClickException):
    """Bad arguments or configuration: `codat-expenses: <line>` on stderr per line, exit 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        for line in self.format_message().splitlines():
            click.echo(f"codat-expenses: {line}", file=file, err=True)


class Refused(CliError):
    """Codat or the store refused, or what was asked for is not stored: exit 1."""

    exit_code = 1


def example(command: str) -> str:
    """The end of a command's --help: one example, its line kept whole (`\\b`)."""
    return f"\b\nExample:\n  {command}"


def company_option(help: str) -> Callable[[FC], FC]:
    """`--company ID`, passed as `company_id`."""
    return click.option("--company", "company_id", help=help)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
host_option = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on."
)


@dataclass(frozen=True)
class Opened:
    """What `opened` gives a command: its settings, its store, and a way to call Codat."""

    settings: config.Settings
    store: Store

    def run(self, work: Callable[[CodatClient], Awaitable[T]]) -> T:
        """Await `work` with a Codat client made for it, and closed after it, in an event loop."""
        import asyncio  # (a command, or a replay, that calls no one need not load it)

        return asyncio.run(_with_codat(self.settings, self.store, work))


async def _with_codat(
    settings: config.Settings, store: Store, work: Callable[[CodatClient], Awaitable[T]]
) -> T:
    """Each call counted and logged like serve's; those about a company written to its
    timeline when the work ends (on a writable store)."""
    # Imported here: a command that calls no one (a dry run, a status) need not load httpx.
    from processor.codat.aiohttp_transport import CodatTransport
    from processor.codat.calls import CallLog, flush
    from processor.codat.client import CodatClient, new_client
    from processor.codat.metered import MeteredTransport
    from processor.metrics import Metrics

    calls = CallLog()
    transport = MeteredTransport(CodatTransport(), Metrics(), calls, quiet=True)
    # Made and closed inside the event loop that uses it: aiohttp closes its connections there.
    http = new_client(
        settings.base_url, settings.api_key, timeout=settings.codat_timeout, transport=transport
    )
    try:
        async with http:
            return await work(CodatClient(http))
    finally:
        if not store.readonly and len(calls):
            await flush(calls, _written_by(store))


def _written_by(store: Store) -> Write:
    async def write(fn: Callable[[Store], None]) -> None:
        with store.transaction():
            fn(store)

    return write


@contextmanager
def opened(
    require: tuple[str, ...] = (),
    *,
    readonly: bool,
    must_exist: bool = True,
    settings: config.Settings | None = None,
) -> Iterator[Opened]:
    """Load the settings (unless given), open the store, and close it when the command is done.

    Only `serve` and `onboard` may create a new database file (`must_exist=False`).
    """
    if settings is None:
        settings = load_settings(require)
    store = _open_store(settings, readonly=readonly, must_exist=must_exist)
    try:
        yield Opened(settings, store)
    finally:
        store.close()


def load_settings(require: tuple[str, ...] = ()) -> config.Settings:
    """The settings, with `require` set; every bad variable on a line of its own if not."""
    try:
        return config.load(require=require)
    except config.ConfigError as error:
        raise CliError(str(error)) from None


def _open_store(settings: config.Settings, *, readonly: bool, must_exist: bool) -> Store:
    missing = missing_store(settings.database_url) if must_exist else None
    if missing is not None:
        raise CliError(missing)
    try:
        return open_store(settings.database_url, readonly=readonly)
    except StoreError as error:
        raise CliError(str(error)) from None

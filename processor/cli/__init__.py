"""The `codat-expenses` command line: a thin layer over the processor's Python API.

One module per command group; `common` holds what they share. A command's module is imported
when that command runs (or help lists them all), so that `codat-expenses replay` does not load
the web app, the sandbox or the other commands' dependencies first.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import click

from processor.cli.common import example
from processor.logs import LogConfigError, configure_logs

# Each command's name, and the module and attribute that define it.
COMMANDS: Mapping[str, tuple[str, str]] = {
    "configure": ("processor.cli.configure", "configure"),
    "options": ("processor.cli.configure", "options"),
    "demo": ("processor.cli.demo", "demo"),
    "onboard": ("processor.cli.onboard", "onboard"),
    "unlink": ("processor.cli.onboard", "unlink"),
    "reconcile": ("processor.cli.reconcile", "reconcile"),
    "replay": ("processor.cli.replay", "replay"),
    "sandbox": ("processor.cli.sandbox", "sandbox"),
    "secret": ("processor.cli.sandbox", "secret"),
    "serve": ("processor.cli.serve", "serve"),
    "status": ("processor.cli.status", "status"),
    "store": ("processor.cli.store", "store_group"),
    "syncs": ("processor.cli.syncs", "syncs"),
}


def _command(name: str) -> click.Command:
    module, attribute = COMMANDS[name]
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command) and command.name == name, (name, command)
    return command


class _LazyGroup(click.Group):
    """A group whose commands are imported when asked for: by name to run one, all of them
    for `--help` or for whoever reads `commands`."""

    @property
    def commands(self) -> dict[str, click.Command]:
        for name in COMMANDS:
            if name not in self._loaded:
                self._loaded[name] = _command(name)
        return self._loaded

    @commands.setter
    def commands(self, value: Mapping[str, click.Command]) -> None:
        self._loaded = dict(value)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = _command(cmd_name)
        return self._loaded[cmd_name]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)


@click.group(
    cls=_LazyGroup,
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

"""`--help` of every command ends with an example of that command (issue 11: "`--help` of every
command ends with an example").

The commands are found by walking the real click group of `processor.cli`, groups and their
subcommands alike, so a command added later is checked without being named here. Each `--help`
runs through click's CliRunner on that group; a few run as real `codat-expenses` subprocesses,
the installed entry point an operator types.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from processor.cli import main

PROGRAM = "codat-expenses"
ENTRY_POINT = Path(sys.executable).parent / PROGRAM


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of `command` and of every command under it, depth first."""
    yield path
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from walk(command.commands[name], (*path, name))


COMMANDS = list(walk(main))


def last_lines(help_text: str) -> tuple[str, str]:
    """The last two non-blank lines of a help text, stripped."""
    lines = [line.strip() for line in help_text.splitlines() if line.strip()]
    assert len(lines) >= 2, f"expected a help text of several lines, found {help_text!r}"
    return lines[-2], lines[-1]


def check_ends_with_example(path: tuple[str, ...], help_text: str) -> None:
    invoked = " ".join((PROGRAM, *path))
    heading, example = last_lines(help_text)
    assert heading == "Example:", (
        f"expected `{invoked} --help` to end with an 'Example:' heading and one example line, "
        f"found the last lines {heading!r}, {example!r}"
    )
    assert example == invoked or example.startswith(f"{invoked} "), (
        f"expected the example of `{invoked} --help` to start with {invoked!r}, found {example!r}"
    )


@pytest.fixture
def root_logger() -> Iterator[None]:
    """The group's callback sends the root logger to CliRunner's stream: put it back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_walk_reaches_the_subcommands_of_groups() -> None:
    """The walk goes below the top level (the `store` group's copy and check, or whatever a
    group holds), so the parametrized test below covers subcommands too."""
    nested = [path for path in COMMANDS if len(path) > 1]
    top = [path for path in COMMANDS if len(path) == 1]
    assert nested, f"expected a group with subcommands under {PROGRAM}, found only {top}"
    assert len(top) == len(main.commands), (top, sorted(main.commands))


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or PROGRAM)
def test_help_ends_with_an_example_of_the_command(path: tuple[str, ...], root_logger: None) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name=PROGRAM, env={"COLUMNS": "80"})
    assert result.exit_code == 0, (
        f"expected `{PROGRAM} {' '.join(path)} --help` to exit 0, found {result.exit_code}: "
        f"{result.output}"
    )
    check_ends_with_example(path, result.output)


@pytest.mark.parametrize(
    "path", [(), ("serve",), ("store", "copy")], ids=lambda path: " ".join(path) or PROGRAM
)
def test_the_installed_command_prints_the_example_last(path: tuple[str, ...]) -> None:
    """The entry point beside the interpreter, as a real process on a narrow terminal: the
    example line is kept whole, not folded at the terminal's width."""
    assert ENTRY_POINT.exists(), f"expected the entry point at {ENTRY_POINT}, found nothing"
    done = subprocess.run(
        [str(ENTRY_POINT), *path, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(ENTRY_POINT.parent), "COLUMNS": "40", "LOG_FORMAT": "json"},
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert done.stderr == "", f"expected nothing on stderr, found {done.stderr!r}"
    check_ends_with_example(path, done.stdout)

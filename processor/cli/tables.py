"""Tables for the command line that never cut an id, a time or an error.

On a terminal too narrow for every column, the least important columns are dropped (and the
table says which); long text folds onto several lines instead of ending in an ellipsis. On a
pipe, nothing is limited by a terminal's width.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

FOLDED_MIN = 12
BORDERS_PER_COLUMN = 3


@dataclass(frozen=True)
class Column:
    """A column: `whole` ones (ids, times) never wrap; `keep` ones are never dropped."""

    title: str
    whole: bool = False
    keep: bool = False


def console() -> Console:
    """A console as wide as the terminal, or unlimited on a pipe."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=100_000, soft_wrap=True)


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Print the rows, dropping optional columns from the right until the rest fits."""
    out = console()
    shown = _fitting(columns, rows, out.width)
    table = Table()
    for index in shown:
        column = columns[index]
        width = _width(column, rows, index)
        table.add_column(
            column.title,
            no_wrap=column.whole,
            min_width=width if column.whole else None,
            overflow="fold",
        )
    for row in rows:
        table.add_row(*[row[index] for index in shown])
    out.print(table)
    dropped = [columns[i].title for i in range(len(columns)) if i not in shown]
    if dropped:
        note = f"(too narrow for: {', '.join(dropped)}; widen the terminal or use --json)"
        out.print(note, highlight=False, markup=False)


def _fitting(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    shown = list(range(len(columns)))
    optional = [i for i in reversed(shown) if not columns[i].keep]
    while _needed(columns, rows, shown) > width and optional:
        shown.remove(optional.pop(0))
    return shown


def _needed(columns: Sequence[Column], rows: Sequence[Sequence[str]], shown: list[int]) -> int:
    total = 0
    for index in shown:
        width = _width(columns[index], rows, index)
        total += (width if columns[index].whole else min(width, FOLDED_MIN)) + BORDERS_PER_COLUMN
    return total


def _width(column: Column, rows: Sequence[Sequence[str]], index: int) -> int:
    return max([len(column.title), *(len(row[index]) for row in rows)])

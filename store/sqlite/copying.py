"""`store copy` on SQLite: rows read in key order in one snapshot, inserted keys and all."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from store.copying import COLUMNS, KEYS, TABLES, Row
from store.errors import StoreError
from store.sqlite.connected import Connected


class SqliteCopying(Connected):
    """The `Copyable` protocol of store/copying.py."""

    @contextmanager
    def copy_snapshot(self) -> Iterator[None]:
        """A deferred read transaction: WAL keeps its snapshot until it ends."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def copy_rows(self, table: str, after: Any, limit: int) -> list[Row]:
        key = _key(table)
        where = "" if after is None else f"WHERE {key} > ?"
        found = self.conn.execute(
            f"SELECT {', '.join(COLUMNS[table])} FROM {table} {where} ORDER BY {key} LIMIT ?",
            [*([] if after is None else [after]), limit],
        )
        return [tuple(row) for row in found]

    def insert_copied(self, table: str, rows: Sequence[Row]) -> None:
        _key(table)
        columns = COLUMNS[table]
        try:
            self.conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                rows,
            )
        except sqlite3.Error as error:
            raise StoreError(f"{table}: {error}") from None

    def count_rows(self, table: str) -> int:
        _key(table)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def finish_copy(self) -> None:
        """Nothing: an INTEGER PRIMARY KEY continues after the largest key in the table."""


def _key(table: str) -> str:
    """The table's key; ValueError for a table that is not copied (names go into the SQL)."""
    if table not in TABLES:
        raise ValueError(f"not a copied table: {table!r}")
    return KEYS[table]

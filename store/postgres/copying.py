"""`store copy` on PostgreSQL: rows read in key order in one snapshot, written with COPY.

Copied keys are written as they were (COPY, like `OVERRIDING SYSTEM VALUE`, takes the given
values of the identity columns); `finish_copy` then moves each identity sequence past the
largest copied key, so the next event or effect gets a higher one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from store.copying import COLUMNS, KEYS, TABLES, Row
from store.errors import StoreError
from store.postgres.connected import Connected, _said

IDENTITIES = (("events", "seq"), ("effects", "id"), ("codat_calls", "id"))


class PostgresCopying(Connected):
    """The `Copyable` protocol of store/copying.py."""

    @contextmanager
    def copy_snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ transaction: every batch reads the same snapshot."""
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._open = True
        try:
            yield
        finally:
            self.rollback()

    def copy_rows(self, table: str, after: Any, limit: int) -> list[Row]:
        key = _key(table)
        where = "" if after is None else f"WHERE {key} > %s"
        try:
            found = self.conn.execute(
                f"SELECT {', '.join(COLUMNS[table])} FROM {table} {where} ORDER BY {key} LIMIT %s",
                [*([] if after is None else [after]), limit],
            )
            return [tuple(row) for row in found]
        except psycopg.Error as error:
            raise StoreError(_said(error, self.url)) from None

    def insert_copied(self, table: str, rows: Sequence[Row]) -> None:
        _key(table)
        try:
            with (
                self.conn.cursor() as cursor,
                cursor.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as error:
            raise StoreError(f"{table}: {_said(error, self.url)}") from None

    def count_rows(self, table: str) -> int:
        _key(table)
        try:
            row = self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        except psycopg.Error as error:
            raise StoreError(_said(error, self.url)) from None
        return int(row[0]) if row else 0

    def finish_copy(self) -> None:
        """Each identity sequence continues after the largest copied key (or starts at 1)."""
        try:
            for table, column in IDENTITIES:
                self.conn.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                    f"COALESCE((SELECT MAX({column}) FROM {table}), 1), "
                    f"(SELECT MAX({column}) FROM {table}) IS NOT NULL)",
                    [table, column],
                )
        except psycopg.Error as error:
            raise StoreError(_said(error, self.url)) from None


def _key(table: str) -> str:
    """The table's key; ValueError for a table that is not copied (names go into the SQL)."""
    if table not in TABLES:
        raise ValueError(f"not a copied table: {table!r}")
    return KEYS[table]

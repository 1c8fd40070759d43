"""The one error the store raises for a store that cannot be opened or used."""


class StoreError(Exception):
    """The store cannot be opened or used (missing file, read-only, disk full, locked).

    `transient`: the server could not be reached, and may be soon (trying again can help)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoreBehind(StoreError):
    """A reader refuses a database an older version of codat-expenses left behind (only
    writers migrate: a reader would find columns and tables missing)."""

    def __init__(self, database: str, version: int, latest: int) -> None:
        super().__init__(
            f"database {database} is at schema version {version}; this codat-expenses reads "
            f"version {latest}: start `codat-expenses serve` of this version once (it migrates "
            "the database), then try again"
        )
        self.version = version


def is_unavailable(error: BaseException) -> bool:
    """Whether an error says the store cannot be used now (disk full, locked, connection lost),
    as opposed to something wrong with one piece of data."""
    import sqlite3
    import sys

    if isinstance(error, StoreError | sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")  # loaded only when a PostgreSQL store was opened
    return psycopg is not None and isinstance(error, psycopg.OperationalError)

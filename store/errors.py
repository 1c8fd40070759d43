"""The one error the store raises for a store that cannot be opened or used."""


class StoreError(Exception):
    """The store cannot be opened or used (missing file, read-only, disk full, locked)."""


def is_unavailable(error: BaseException) -> bool:
    """Whether an error says the store cannot be used now (disk full, locked, gone), as opposed
    to something wrong with one piece of data."""
    import sqlite3

    return isinstance(error, StoreError | sqlite3.OperationalError)

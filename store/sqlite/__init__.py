"""The SQLite backend: the embedded default, one file, one writer process."""

from __future__ import annotations

from store.sqlite.calls import SqliteCodatCalls
from store.sqlite.companies import SqliteCompanyStates
from store.sqlite.connected import Connected
from store.sqlite.copying import SqliteCopying
from store.sqlite.dashboard import SqliteDashboard
from store.sqlite.effects import SqliteEffects
from store.sqlite.events import SqliteEventLog
from store.sqlite.options import SqliteExpenseOptions
from store.sqlite.ratelimits import SqliteRateLimits
from store.sqlite.replaying import SqliteReplaying
from store.sqlite.syncs import SqliteExpenseSyncs


class SqliteStore(
    SqliteCodatCalls,
    SqliteCopying,
    SqliteDashboard,
    SqliteEffects,
    SqliteEventLog,
    SqliteCompanyStates,
    SqliteExpenseOptions,
    SqliteExpenseSyncs,
    SqliteRateLimits,
    SqliteReplaying,
    Connected,
):
    """The event log, company state and record of effects, in one SQLite file."""


__all__ = ["SqliteStore"]

"""The PostgreSQL backend: the same contract as SQLite's, on a server (issue 10, first part).

Reached through `store.open_store("postgresql://...")` only; serving on it (DATABASE_URL) waits
for the multi-instance work. How it differs from SQLite: see `connected.py`.
"""

from __future__ import annotations

from store.postgres.calls import PostgresCodatCalls
from store.postgres.companies import PostgresCompanyStates
from store.postgres.connected import Connected
from store.postgres.copying import PostgresCopying
from store.postgres.dashboard import PostgresDashboard
from store.postgres.effects import PostgresEffects
from store.postgres.events import PostgresEventLog
from store.postgres.options import PostgresExpenseOptions
from store.postgres.ratelimits import PostgresRateLimits
from store.postgres.replaying import PostgresReplaying
from store.postgres.syncs import PostgresExpenseSyncs


class PostgresStore(
    PostgresCodatCalls,
    PostgresCopying,
    PostgresDashboard,
    PostgresEffects,
    PostgresEventLog,
    PostgresCompanyStates,
    PostgresExpenseOptions,
    PostgresExpenseSyncs,
    PostgresRateLimits,
    PostgresReplaying,
    Connected,
):
    """The event log, company state and record of effects, in one PostgreSQL database."""


__all__ = ["PostgresStore"]

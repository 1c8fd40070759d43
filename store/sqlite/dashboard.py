"""The dashboard's indexed reads on SQLite (store/dashboarding.py), with SQLite's JSON paths."""

from __future__ import annotations

from store.dashboarding import DashboardSql
from store.sqlite.connected import Connected


class SqliteDashboard(DashboardSql, Connected):
    """The expressions of the indexes of migration 6, spelled as they were indexed."""

    MARK = "?"
    NAME = "lower(json_extract(data, '$.name'))"
    FAILING_AT = "json_extract(data, '$.syncs[0].at')"
    FAILING = "json_extract(data, '$.syncs[0].outcome') = 'failed'"
    QUIET_SINCE = (
        "coalesce(json_extract(data, '$.syncs[0].at'), "
        "json_extract(data, '$.configuration.checked_at'))"
    )

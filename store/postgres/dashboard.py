"""The dashboard's indexed reads on PostgreSQL (store/dashboarding.py), over the TEXT state
read as JSON, in byte order (`COLLATE "C"`) as the indexes of migration 6 are.

PostgreSQL's JSON operators refuse a document holding an escaped NUL (`\\u0000`, which text
cannot hold), and an index expression that fails would refuse the company's write: such a
state reads as no JSON here (NULL), so it is in none of these lists, and is still stored.
"""

from __future__ import annotations

from store.dashboarding import DashboardSql
from store.postgres.connected import Connected

STATE = "(CASE WHEN strpos(data, '\\u0000') = 0 THEN data::json END)"


class PostgresDashboard(DashboardSql, Connected):
    """The expressions of the indexes of migration 6, spelled as they were indexed."""

    MARK = "%s"
    EXPLAIN = "EXPLAIN"
    UNINDEXED_STATE = "(state || '')"
    NAME = f"(lower({STATE} ->> 'name') COLLATE \"C\")"
    FAILING_AT = f"(({STATE} -> 'syncs' -> 0 ->> 'at') COLLATE \"C\")"
    FAILING = f"({STATE} -> 'syncs' -> 0 ->> 'outcome') = 'failed'"
    QUIET_SINCE = (
        f"(coalesce({STATE} -> 'syncs' -> 0 ->> 'at', "
        f"{STATE} -> 'configuration' ->> 'checked_at') COLLATE \"C\")"
    )

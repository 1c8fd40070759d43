"""What the dashboard reads that the store cannot yet ask for directly.

The store orders companies by id only. Until it offers companies newest first, searched by id
or name, and in a state since before a time (each one indexed query), these functions build
them from `companies()` pages: correct, but a scan of every company in the state, so slow at
a million companies. Each one names the store operation that would replace it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from store import CompanyRow, Effect, Page

PAGE = 1000


class DashboardReads(Protocol):
    """What the dashboard reads: the query API's reads, counts and dead letters."""

    def companies(self, *, state: str | None, limit: int, after: str | None) -> Page: ...

    def state_counts(self) -> dict[str, int]: ...

    def failed_effects(self) -> list[Effect]: ...

    def count_events(self, *, pending: bool = False) -> int: ...


@dataclass(frozen=True)
class Listing:
    """One page of a list of companies, and whether there is a next one."""

    companies: list[CompanyRow]
    page: int
    total: int
    more: bool


def _every(store: DashboardReads, state: str | None) -> Iterator[CompanyRow]:
    after = None
    while True:
        found = store.companies(state=state, limit=PAGE, after=after)
        yield from found.companies
        if found.next_after is None:
            return
        after = found.next_after


def name_of(row: CompanyRow) -> str:
    return str(row.data.get("name") or "")


def newest_first(
    store: DashboardReads, *, state: str | None, search: str, page: int, size: int
) -> Listing:
    """Companies newest change first, whose id or name contains `search` (any case).

    Wanted from the store: companies(state, search, limit, before=(updated_at, id)) over an
    index on (state, updated_at DESC, company_id), with a name index for the search.
    """
    needle = search.casefold()
    rows = [
        row
        for row in _every(store, state)
        if needle in row.company_id.casefold() or needle in name_of(row).casefold()
    ]
    rows.sort(key=lambda row: (row.updated_at, row.company_id), reverse=True)
    start = (page - 1) * size
    return Listing(rows[start : start + size], page, len(rows), len(rows) > start + size)


def stuck(store: DashboardReads, state: str, before: str) -> list[CompanyRow]:
    """Companies in `state` whose state last changed before `before`, oldest first.

    Wanted from the store: companies_in_state_since(state, before, limit) over an index on
    (state, updated_at).
    """
    found = [row for row in _every(store, state) if row.updated_at < before]
    return sorted(found, key=lambda row: (row.updated_at, row.company_id))

"""The dashboard's lists of companies: pages walked by a cursor, searches, and their cursors.

Each list is one indexed store read of at most a page (`store.DashboardReads`), so a page
costs the same at a million companies as at a thousand; a list's length comes from the state
counts the store keeps, or from a count that stops at `CAP`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from processor.http.queries import COMPANY_ID
from store import CompanyRow, DashboardReads

CAP = 1000
_MOMENT = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]{2,20}(Z|[+-]\d\d:\d\d)?", re.ASCII)


@dataclass(frozen=True)
class Listing:
    """One page of a list of companies, how many there are (None: not counted), and the
    cursor of the next page (None: this is the last)."""

    companies: list[CompanyRow]
    total: int | None
    next: str | None


def name_of(row: CompanyRow) -> str:
    return str(row.data.get("name") or "")


def newest_first(
    store: DashboardReads, *, state: str | None, before: tuple[str, str] | None, size: int
) -> Listing:
    """A page of companies, latest change first, optionally in one state."""
    found = store.companies_newest(state=state, limit=size + 1, before=before)
    counts = store.state_counts()
    total = counts.get(state, 0) if state is not None else sum(counts.values())
    more = len(found) > size
    page = found[:size]
    return Listing(page, total, encode_cursor(page[-1]) if more and page else None)


def search(store: DashboardReads, text: str, *, state: str | None, size: int) -> Listing:
    """Companies whose id, or name, starts with `text`: ids first, then names (one page)."""
    found = store.search_companies(text, state=state, limit=size)
    return Listing(found[:size], len(found[:size]), None)


def encode_cursor(row: CompanyRow) -> str:
    raw = f"{row.updated_at}|{row.company_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str] | None:
    """(updated_at, company_id) of a cursor made by `encode_cursor`; None for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    moment, _, company_id = raw.partition("|")
    if not (_MOMENT.fullmatch(moment) and COMPANY_ID.fullmatch(company_id)):
        return None
    return moment, company_id

"""The calls made to Codat about each company, kept for its timeline.

The metered transport notes each call whose path names a company (`/companies/{id}/...`) in a
`CallLog`; `serve` writes what was noted to the store about once a second (`flush_periodically`)
and a command-line action when it ends. The log is bounded: if the store cannot keep up, the
oldest notes go first (a timeline entry lost, never an event: the calls' results that matter
are events of their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable

from processor import clock
from store import CodatCall, Store

log = logging.getLogger(__name__)
_COMPANY = re.compile(r"/companies/([^/]+)")
FLUSH_SECONDS = 1.0
HELD = 10_000


def company_of(path: str) -> str | None:
    """The company a Codat API path is about, if it names one."""
    found = _COMPANY.search(path)
    return found.group(1) if found else None


class CallLog:
    """Calls noted, not yet written to the store (at most HELD, oldest dropped first)."""

    def __init__(self, held: int = HELD) -> None:
        self._calls: deque[CodatCall] = deque(maxlen=held)

    def note(
        self,
        path: str,
        operation: str,
        status: str,
        duration_ms: float,
        correlation_id: str | None = None,
        error: str | None = None,
    ) -> None:
        company_id = company_of(path)
        if company_id is None:
            return
        call = CodatCall(
            company_id, clock.now(), operation, status, duration_ms, correlation_id, error
        )
        self._calls.append(call)

    def take(self) -> list[CodatCall]:
        """Every call noted since the last take, oldest first."""
        taken = list(self._calls)
        self._calls.clear()
        return taken

    def put_back(self, taken: list[CodatCall]) -> None:
        """Calls taken but not written: first in line again (room permitting)."""
        for call in reversed(taken):
            if len(self._calls) == self._calls.maxlen:
                break
            self._calls.appendleft(call)

    def __len__(self) -> int:
        return len(self._calls)


Write = Callable[[Callable[[Store], None]], Awaitable[None]]


async def flush(calls: CallLog, write: Write) -> None:
    """Write what was noted, in one transaction; kept for the next flush if the store fails."""
    taken = calls.take()
    if not taken:
        return
    try:
        await write(lambda store: store.record_codat_calls(taken))
    except Exception as error:
        calls.put_back(taken)
        log.warning("%d calls to Codat not yet written to the store: %s", len(taken), error)


async def flush_periodically(calls: CallLog, write: Write) -> None:
    """Until cancelled, then once more."""
    try:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await flush(calls, write)
    finally:
        with contextlib.suppress(Exception):
            await flush(calls, write)

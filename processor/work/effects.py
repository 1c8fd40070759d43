"""Carrying out the intents the folds open against Codat, each result recorded as an event.

The partner expense connection is created exactly once. Look before you create: confirm the
accounting connection is still Linked, adopt an existing partner expense connection if Codat
already has one (a crashed attempt may have made it), and only then POST with the intent's
recorded Idempotency-Key. Once the data is read, the configuration's choices are fetched (a
snapshot kept in the store) and the configuration is read back from Codat (an event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from handlers.commands import (
    CREATE_PARTNER_EXPENSE_CONNECTION,
    FETCH_EXPENSE_OPTIONS,
    FETCH_SYNC_TRANSACTIONS,
    READ_EXPENSE_CONFIGURATION,
)
from handlers.events import ConnectionStatus, SourceType
from handlers.syncs import FAILING_STATUSES
from handlers.transitions import (
    CONFIGURATION_OBSERVED,
    CONNECTION_DELETED,
    CONNECTION_OBSERVED,
    PARTNER_CONNECTION_CREATED,
    PARTNER_CONNECTION_FAILED,
    SYNC_TRANSACTIONS_FETCHED,
)
from processor import clock
from processor.codat.client import CodatClient, CodatError
from processor.codat.connections import connection_fields
from processor.config import Settings
from processor.work.configuration import fetch_options, observe_configuration
from processor.work.ratelimits import pause_for_429
from processor.work.syncs import fetched_sync
from processor.work.synthetic import synthetic_event
from store import EFFECT_CANCELLED, EFFECT_DONE, EFFECT_FAILED, Effect, NewEvent, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class Writes(Protocol):
    """Something that runs a function on the store in one write transaction."""

    async def call(self, fn: Callable[[Store], T]) -> T: ...


@dataclass(frozen=True)
class Attempt:
    """What one attempt at an effect found: the event to record (if any), the options
    snapshot to keep (if any), and how the effect ends."""

    event_type: str | None
    connection: dict[str, Any] | None
    effect_status: str
    note: str
    fields: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] | None = None
    # For an observation of Codat's state: when Codat was asked (its event is dated then, so
    # that a webhook generated while the call was under way is newer and wins).
    asked_at: str | None = None


async def create_partner_expense_connection(codat: CodatClient, effect: Effect) -> Attempt:
    """One attempt; raises CodatError when Codat fails.

    The two look-ups are asked at once (one round trip, not two): the accounting connection
    (still Linked?) and the company's connections (a partner expense connection already?). They
    are read as if one after the other: a failed or not Linked accounting connection decides
    first, whatever the listing answered; only then does the listing count.
    """
    company_id = effect.company_id
    asked_at = clock.now()
    listing = asyncio.ensure_future(codat.list_connections(company_id))
    try:
        if effect.connection_id:
            try:
                accounting = await codat.get_connection(company_id, effect.connection_id)
            except CodatError as error:
                if error.status != 404:
                    raise
                gone = {"id": effect.connection_id, "status": "Deleted"}
                return Attempt(
                    CONNECTION_DELETED,
                    gone,
                    EFFECT_CANCELLED,
                    "accounting connection gone",
                    asked_at=asked_at,
                )
            if accounting.get("status") != ConnectionStatus.LINKED:
                return Attempt(
                    CONNECTION_OBSERVED,
                    accounting,
                    EFFECT_CANCELLED,
                    f"accounting connection is {accounting.get('status')}, not Linked",
                    asked_at=asked_at,
                )
        connections = await listing
    finally:
        await _settled(listing)
    # Since the company's first create command: an earlier one, cancelled or failed (the
    # customer unlinked and relinked meanwhile), may have created it and never heard back.
    opened_at = effect.first_of_kind_at or effect.created_at
    found = existing_partner_connection(connections, opened_at=opened_at)
    if found is not None:
        connection, how = found
        return Attempt(PARTNER_CONNECTION_CREATED, connection, EFFECT_DONE, how)
    created = await codat.create_partner_expense_connection(
        company_id, idempotency_key=effect.idempotency_key
    )
    return Attempt(PARTNER_CONNECTION_CREATED, created, EFFECT_DONE, "created")


# The sourceTypes a partner expense connection may have besides Expense: CODAT.md lists seven,
# and Accounting, Banking, BankFeed and Commerce are certainly not it.
MAYBE_PARTNER_EXPENSE = frozenset({"Other", "Unknown"})


def existing_partner_connection(
    connections: list[dict[str, Any]], *, opened_at: str
) -> tuple[dict[str, Any], str] | None:
    """The partner expense connection Codat already holds for the company, and how it was
    recognised; None if there is none (then it is created).

    One of sourceType `Expense`, a Linked one first. CODAT.md leaves the partner connection's
    sourceType unknown ("most likely Expense"; build for both cases), and Codat replays an
    Idempotency-Key's answer for 90 minutes only: failing that, one of type `Other` or `Unknown`
    (the types left once the four certainly not it are set aside) created since the company's
    first command to create it was opened (`opened_at`) is taken for the one an earlier attempt
    created and never heard back from.
    """
    expense = [c for c in connections if c.get("sourceType") == SourceType.EXPENSE]
    if expense:
        linked = [c for c in expense if c.get("status") == ConnectionStatus.LINKED]
        return (linked or expense)[0], "adopted"
    since = [
        c
        for c in connections
        if c.get("sourceType") in MAYBE_PARTNER_EXPENSE and _created_since(c, opened_at)
    ]
    if since:
        kind = since[0].get("sourceType")
        return since[0], f"adopted (sourceType {kind!r}, created since this command was opened)"
    return None


def _created_since(connection: dict[str, Any], opened_at: str) -> bool:
    created = connection.get("created")
    if not isinstance(created, str):
        return False
    try:
        # To the second: Codat's `created` may carry no fraction of it.
        return clock.normalize(created)[:19] >= opened_at[:19]
    except clock.InvalidDate:
        return False


async def _settled(task: asyncio.Future[Any]) -> None:
    """Let a call whose answer is no longer needed end (metered and noted like any call); its
    error, if any, is not raised again. Cancelled with the caller, if the caller is."""
    if not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            task.cancel()
            raise
    if not task.cancelled():
        task.exception()


async def fetch_expense_options(codat: CodatClient, effect: Effect) -> Attempt:
    """One attempt: the choices for the configuration, kept as the company's snapshot."""
    options = await fetch_options(codat, effect.company_id)
    counts = ", ".join(
        f"{len(options[name])} {name}" for name in ("accounts", "suppliers", "customers")
    )
    return Attempt(None, None, EFFECT_DONE, f"options fetched ({counts})", options=options)


async def read_expense_configuration(codat: CodatClient, effect: Effect) -> Attempt:
    """One attempt: Codat's configuration, recorded as observed (set or not)."""
    ids = await observe_configuration(codat, effect.company_id)
    note = "configuration read: " + (", ".join(sorted(ids)) + " set" if ids else "not set")
    fields = {"configuration": ids}
    return Attempt(CONFIGURATION_OBSERVED, None, EFFECT_DONE, note, fields=fields)


async def fetch_sync_transactions(codat: CodatClient, effect: Effect) -> Attempt:
    """One attempt: a failed sync's transactions (the intent keeps the sync id), recorded as
    an event so that the fold merges them like any report about the sync."""
    sync_id = effect.connection_id or ""
    try:
        listed = await codat.list_sync_transactions(effect.company_id, sync_id)
    except CodatError as error:
        if error.status != 404:
            raise
        # Codat knows no transactions of this sync: recorded as such, so that it is not asked
        # again (and newer failed syncs get their turn).
        listed = []
    sync = fetched_sync(sync_id, listed)
    failing = sum(1 for t in sync["transactions"] if t["status"] in FAILING_STATUSES)
    note = f"sync {sync_id}: {len(listed)} transactions fetched, {failing} failing"
    if not listed:
        note = f"sync {sync_id}: Codat lists no transactions"
    return Attempt(SYNC_TRANSACTIONS_FETCHED, None, EFFECT_DONE, note, fields={"sync": sync})


ATTEMPTS: dict[str, Callable[[CodatClient, Effect], Awaitable[Attempt]]] = {
    CREATE_PARTNER_EXPENSE_CONNECTION: create_partner_expense_connection,
    FETCH_EXPENSE_OPTIONS: fetch_expense_options,
    READ_EXPENSE_CONFIGURATION: read_expense_configuration,
    FETCH_SYNC_TRANSACTIONS: fetch_sync_transactions,
}


def record_attempt(
    store: Store, effect: Effect, attempt: Attempt, now: str, owner: str | None = None
) -> None:
    """Record what an attempt found, and close the effect, in one transaction. `owner`: the
    attempt's claimant (whose claim ends with it)."""
    connection = connection_fields(attempt.connection) if attempt.connection else None
    if connection is not None and attempt.event_type == PARTNER_CONNECTION_CREATED:
        connection["source_type"] = SourceType.EXPENSE
    if attempt.event_type is not None:
        fields = {
            "company_id": effect.company_id,
            "connection": connection,
            "note": attempt.note,
            **attempt.fields,
        }
        event = _event(
            effect, attempt.event_type, fields, attempt.connection, now, asked_at=attempt.asked_at
        )
        store.append_events([event])
    if attempt.options is not None:
        store.save_options(effect.company_id, attempt.options, now)
    result = {"note": attempt.note, "connectionId": connection and connection["id"]}
    store.finish_effect(
        effect.id, status=attempt.effect_status, now=now, result=result, owner=owner
    )


def record_failure(
    store: Store,
    effect: Effect,
    error: CodatError,
    *,
    now: str,
    initial: float,
    maximum: float,
    horizon: float,
    hold: float = 0.0,
    owner: str | None = None,
) -> bool:
    """Schedule a retry, or close the effect as failed; returns True if it will be retried.

    `hold`: if the effect was closed meanwhile and the call got no answer (a timeout, a lost
    connection), a 409 or a 5xx, Codat may still act on it: its claim keeps a replacement
    waiting that long."""
    # The retries' window opens when the effect was created, or last put back in line.
    age = (clock.parse(now) - clock.parse(effect.requeued_at or effect.created_at)).total_seconds()
    if error.retryable and age < horizon:
        delay = max(backoff(effect.attempts + 1, initial, maximum), error.retry_after or 0.0)
        # No answer, "still in flight" (409) or a server error: Codat may still be creating.
        unsettled = error.status is None or error.status == 409 or error.status >= 500
        unanswered = unsettled and hold > 0
        store.retry_effect(
            effect.id,
            error=error.message,
            next_attempt_at=clock.after(delay),
            now=now,
            hold_until=clock.after(hold) if unanswered else None,
            owner=owner,
        )
        return True
    reason = error.message if not error.retryable else f"gave up after {age:.0f} s: {error}"
    closed = store.finish_effect(
        effect.id, status=EFFECT_FAILED, now=now, error=reason, owner=owner
    )
    if closed and effect.kind == CREATE_PARTNER_EXPENSE_CONNECTION:
        # The company stays linked: its state says why. Other commands' failures show in the
        # status document's `failed` list. (Not when another process closed the effect
        # meanwhile, done perhaps: its failure is no news.)
        fields = {"company_id": effect.company_id, "error": reason}
        store.append_events([_event(effect, PARTNER_CONNECTION_FAILED, fields, None, now)])
    return False


def claim_seconds(settings: Settings) -> float:
    """How long one attempt may hold an effect: its three Codat calls and some slack.

    A claim that outlives a crashed worker only delays the next attempt; the recorded
    Idempotency-Key and the look-before-create listing keep a late overlap harmless.
    """
    return 3 * settings.codat_timeout + 5


@dataclass(frozen=True)
class Done:
    """How one attempt at an effect ended: the effect's status afterwards, and the note."""

    status: str
    note: str | None = None


async def carry_out(
    writer: Writes, codat: CodatClient, effect: Effect, settings: Settings, owner: str
) -> str:
    """One attempt at an effect `owner` claimed, recorded; returns its status afterwards."""
    return (await attempt_and_record(writer, codat, effect, settings, owner=owner)).status


async def attempt_and_record(
    writer: Writes,
    codat: CodatClient,
    effect: Effect,
    settings: Settings,
    *,
    calls: contextlib.AbstractAsyncContextManager[Any] | None = None,
    owner: str | None = None,
) -> Done:
    """One attempt at an effect, recorded. `calls` (a semaphore) is held for the Codat calls
    only, not while the result waits to be written."""
    attempt_at = ATTEMPTS.get(effect.kind)
    if attempt_at is None:
        # An intent of a kind this version does not know (written by a newer one): leave it.
        log.error("effect %d: unknown command %r, left pending", effect.id, effect.kind)
        return Done("pending")
    try:
        async with calls or contextlib.nullcontext():
            attempt = await attempt_at(codat, effect)
    except CodatError as error:
        failure = error

        def record(store: Store) -> bool:
            now = clock.now()
            if failure.status == 429:
                # Every non-urgent call waits with this one; this intent retries on its own.
                pause_for_429(store, failure.retry_after, f"a {effect.kind} call", now)
            return record_failure(
                store,
                effect,
                failure,
                now=now,
                initial=settings.retry_initial,
                maximum=settings.retry_max,
                horizon=settings.retry_horizon,
                hold=settings.codat_timeout,
                owner=owner,
            )

        retried = await writer.call(record)
        level = logging.INFO if retried else logging.ERROR
        outcome = "will retry" if retried else "gave up"
        log.log(level, "company %s: %s (%s)", effect.company_id, error, outcome)
        return Done("pending" if retried else EFFECT_FAILED, str(error))
    await writer.call(lambda store: record_attempt(store, effect, attempt, clock.now(), owner))
    if effect.kind == CREATE_PARTNER_EXPENSE_CONNECTION:
        log.info("company %s: partner expense connection %s", effect.company_id, attempt.note)
    else:
        log.info("company %s: %s", effect.company_id, attempt.note)
    return Done(attempt.effect_status, attempt.note)


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with full jitter: Codat's SDK schedule (x1.5), capped."""
    ceiling = min(maximum, initial * 1.5 ** max(0, attempt - 1))
    return random.uniform(0, ceiling)


def _event(
    effect: Effect,
    event_type: str,
    fields: dict[str, Any],
    answer: dict[str, Any] | None,
    now: str,
    *,
    asked_at: str | None = None,
) -> NewEvent:
    """The event of an attempt, received `now`; generated then, or when Codat was asked
    (`asked_at`) for an observation of its state."""
    return synthetic_event(
        message_id=f"effect:{effect.id}:{effect.attempts + 1}:{event_type}",
        event_type=event_type,
        source="command",
        company_id=effect.company_id,
        fields=fields,
        body={"effect": effect.id, "eventType": event_type, "codat": answer},
        generated_date=asked_at,
        now=now,
    )


def release_dead_claims(store: Store) -> list[str]:
    """Release claims of processes on this host that no longer run (a crashed `serve`).

    Their attempts died with them; without this the restarted worker would wait for the
    claims to expire. Claims of other hosts are left to expire. Called as a process starts,
    before it claims anything: a claim under its own pid is an earlier process's that had the
    same pid (a container restarted under the same host name runs as the same pid).
    """
    released = []
    for owner in store.claim_owners():
        _, host, pid = [*owner.split(":"), "", ""][:3]
        if (
            host == socket.gethostname()
            and pid.isdigit()
            and (int(pid) == os.getpid() or not _alive(int(pid)))
        ):
            store.release_claims(owner)
            released.append(owner)
    if released:
        log.info("released the claims of %s, no longer running", ", ".join(released))
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

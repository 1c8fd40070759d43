"""Replay: re-run stored events through the same handlers as live processing.

A replay rebuilds each selected company's state from its whole event log (the fold that live
processing does, from an empty state), then carries out only the commands the rebuilt state
still calls for. Every step is one transaction, so it is safe beside a running `serve` and safe
to interrupt and run again.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any

from handlers.commands import needed_commands
from handlers.transitions import fold, initial_state
from processor import clock
from processor.work.folding import FoldReport, load_state, rebuild, rebuild_companies, to_event
from processor.work.planning import Planners, Rebuild
from store import EFFECT_FAILED, EFFECT_PENDING, Store

if TYPE_CHECKING:
    from processor.codat.client import CodatClient
    from processor.config import Settings
    from processor.intake.writer import DirectWriter

# Companies rebuilt per transaction (one commit each), and read per page of the selection.
REBUILD_BATCH = 500


@dataclass(frozen=True)
class Selection:
    """Which events to replay; every given criterion must hold."""

    company_id: str | None = None
    event_id: str | None = None
    since: str | None = None
    event_type: str | None = None
    failed: bool = False

    @property
    def everything(self) -> bool:
        """No criterion: every company with an event (its pages are whole ranges of ids)."""
        return self == Selection()

    def criteria(self) -> dict[str, Any]:
        return {
            "company_id": self.company_id,
            "event_or_message_id": self.event_id,
            "since": self.since,
            "event_type": self.event_type,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class Plan:
    """What a replay would do to one company."""

    company_id: str
    state_now: str | None
    state_after: str
    events: int
    commands: list[str]


@dataclass
class Summary:
    """What a replay did."""

    events: int = 0
    companies: int = 0
    changed: int = 0
    commands: int = 0
    failures: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Matched:
    """What a selection matches: how many events, and of how many companies."""

    events: int
    companies: int


def count_matching(store: Store, selection: Selection) -> Matched:
    events, companies = store.count_matching(**selection.criteria())
    return Matched(events, companies)


def selected_companies(store: Store, selection: Selection) -> Iterator[str]:
    """The companies whose events match, by id, read a page at a time (memory stays bounded).

    Pages are keyed by the last id seen, so rebuilding the companies of one page (even
    requeueing their failed commands) cannot move another company in or out of later pages.
    """
    after: str | None = None
    while True:
        page = store.matching_companies(**selection.criteria(), after=after, limit=REBUILD_BATCH)
        yield from page
        if len(page) < REBUILD_BATCH:
            return
        after = page[-1]


def unknown_selector(store: Store, selection: Selection) -> str | None:
    """Why nothing matched, when a selector names what the store has never seen."""
    if selection.company_id is not None and not store.knows_company(selection.company_id):
        return f"no company {selection.company_id!r} in the store (expected a stored company id)"
    if selection.event_id is not None and not store.find_events(
        event_or_message_id=selection.event_id
    ):
        return f"no event or webhook message {selection.event_id!r} in the store"
    if selection.event_type is not None:
        types = store.event_types()
        if selection.event_type not in types:
            known = ", ".join(types) or "none"
            return f"no event of type {selection.event_type!r} in the store (stored types: {known})"
    return None


def plans(store: Store, company_ids: Sequence[str], *, key_range: bool = False) -> list[Plan]:
    """What a replay of each company would produce (state now and after, events, commands it
    would run), computed without writing anything, read in a few statements for the batch.
    `key_range`: a page of every company (see `Store.replay_logs_of`)."""
    states = store.states_of(company_ids)
    logs = store.replay_logs_of(company_ids, key_range=key_range)
    open_effects = store.open_effects_of(company_ids)
    found = []
    for company_id in company_ids:
        folded, pending = logs[company_id]
        events = folded + pending
        final, _ = fold(initial_state(company_id), [to_event(e) for e in events])
        open_kinds = {e.kind for e in open_effects[company_id]}
        commands = sorted({c.kind for c in needed_commands(final)} | open_kinds)
        found.append(Plan(company_id, states.get(company_id), final.state, len(events), commands))
    return found


def batches(company_ids: Iterable[str], size: int = REBUILD_BATCH) -> Iterator[list[str]]:
    ids = iter(company_ids)
    while chunk := list(islice(ids, size)):
        yield chunk


# `Opened.run`: await some work with a Codat client made for it, and closed after it.
Run = Callable[[Callable[["CodatClient"], Awaitable[None]]], None]


def replay(
    store: Store,
    settings: Settings,
    company_ids: Iterable[str],
    *,
    run: Run,
    failed: bool = False,
    key_range: bool = False,
    progress: Callable[[str], Any] = lambda _: None,
    planners: Planners | None = None,
) -> Summary:
    """Rebuild each company from its log, then carry out the commands it still needs.

    `company_ids` may be a lazy iterable (`selected_companies`): it is read a batch at a time.
    `key_range`: they are every company, in order of id (`Selection.everything`): each batch is
    read as one range of ids. `run` gives a Codat client to the commands of a batch that has
    some: a replay with nothing to carry out opens none (nor loads httpx). `planners`: helper
    processes that plan the pages of a full replay (`key_range`) ahead.
    """
    owner = f"replay:{socket.gethostname()}:{os.getpid()}"
    summary = Summary()
    started = clock.now()
    with store.transaction():
        if store.claim_owners():
            # An interrupted replay's claims need not wait to expire.
            from processor.work.effects import release_dead_claims

            release_dead_claims(store)
    done = _Done(store, settings, owner, summary, started, failed, progress)
    pages: Iterable[tuple[list[str], Rebuild]]
    if planners is not None and key_range and not failed:
        pages = planners.rebuilds(store, batches(company_ids))
    else:
        pages = ((chunk, partial(_rebuild, chunk, key_range)) for chunk in batches(company_ids))
    for chunk, rebuild_page in pages:
        # Rebuilds are shared out in transactions of many companies (one commit each); the
        # commands then run company by company, each attempt claimed and recorded on its own.
        with store.transaction():
            if failed:
                for company_id in chunk:
                    _requeue_failed(store, company_id)
            reports = rebuild_page(store, clock.now())
        if any(report.commands or report.kept_effects for report in reports):
            run(partial(done.carry_out, reports=reports))
        else:
            for report in reports:
                done.count(report, report.after)
    return summary


def _rebuild(chunk: list[str], key_range: bool, store: Store, now: str) -> list[FoldReport]:
    return rebuild_companies(store, chunk, now, key_range=key_range)


@dataclass
class _Done:
    """What a replay does with a batch of rebuilt companies, in their order: carry out their
    commands (with a Codat client), and count them in the summary."""

    store: Store
    settings: Settings
    owner: str
    summary: Summary
    started: str
    failed: bool
    progress: Callable[[str], Any]

    async def carry_out(self, codat: CodatClient, reports: Sequence[FoldReport]) -> None:
        from processor.intake.writer import DirectWriter

        writer = DirectWriter(self.store)
        for report in reports:
            after = report.after
            if report.commands or report.kept_effects:
                company_id = report.company_id
                await _run_effects(
                    writer, self.store, codat, self.settings, company_id, self.owner, self.summary
                )
                state = load_state(self.store, company_id)
                after = state.state if state else after
            self.count(report, after)

    def count(self, report: FoldReport, after: str) -> None:
        summary = self.summary
        summary.companies += 1
        summary.events += report.events
        summary.changed += report.before != after
        if self.failed:
            _note_failed_elsewhere(self.store, report.company_id, self.started, summary)
        self.progress(report.company_id)


def _note_failed_elsewhere(store: Store, company_id: str, started: str, summary: Summary) -> None:
    """A command that `serve` took over and that failed again during the replay is a failure."""
    if any(f.startswith(f"{company_id}:") for f in summary.failures):
        return
    for effect in store.company_effects(company_id):
        if effect.status == EFFECT_FAILED and effect.updated_at >= started:
            summary.failures.append(f"{company_id}: {effect.last_error}")


async def _run_effects(
    writer: DirectWriter,
    store: Store,
    codat: CodatClient,
    settings: Settings,
    company_id: str,
    owner: str,
    summary: Summary,
) -> None:
    from processor.work.effects import carry_out, claim_seconds  # (with httpx: when needed)

    deadline = asyncio.get_running_loop().time() + claim_seconds(settings) + 5
    while True:
        effects = store.open_effects(company_id)
        if not effects:
            return
        effect = effects[0]
        with store.transaction():
            until = clock.after(claim_seconds(settings))
            claimed = store.claim_effect(effect.id, owner, until, clock.now())
        if not claimed:
            # Another process (serve, or an interrupted replay's stale claim) holds it.
            if asyncio.get_running_loop().time() > deadline:
                summary.waiting.append(company_id)
                return
            await asyncio.sleep(0.2)
            continue
        status = await carry_out(writer, codat, effect, settings, owner)
        summary.commands += 1
        if status == EFFECT_PENDING:
            refreshed = store.effect(effect.id)
            error = refreshed.last_error if refreshed else "unknown error"
            summary.failures.append(f"{company_id}: {error} (left pending; serve retries it)")
            return
        if status == EFFECT_FAILED:
            refreshed = store.effect(effect.id)
            summary.failures.append(f"{company_id}: {refreshed.last_error if refreshed else ''}")
            return
        # The recorded result is an event of its own: fold it in.
        with store.transaction():
            rebuild(store, company_id, clock.now())


def _requeue_failed(store: Store, company_id: str) -> int:
    now = clock.now()
    return sum(
        store.requeue_effect(effect.id, now)
        for effect in store.company_effects(company_id)
        if effect.status == "failed"
    )

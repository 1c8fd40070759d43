"""The onboarding state machine: pure functions from (state, event) to (state, commands).

No I/O happens here. Transitions are driven by the event type; a connection's `status` is read
only to tell `Unlinked` from `Deauthorized`, or when the event is Codat's own answer to a query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers.commands import (
    Command,
    CreatePartnerExpenseConnection,
    needed_commands,
    sync_commands,
)
from handlers.copies import evolve
from handlers.events import Connection, ConnectionStatus, Event, SourceType
from handlers.state import (
    CONNECTED_STATES,
    CompanyState,
    ExpensesConfiguration,
    OnboardingState,
)
from handlers.syncs import KEPT_SYNCS, SUCCESSFUL, merge_sync, newest_first, report_key

COMPANY_CREATED = "company.created"
COMPANY_DELETED = "company.deleted"
CONNECTION_CREATED = "connection.created"
CONNECTION_CONNECTED = "connection.connected"
CONNECTION_FAILED = "connection.failed"
CONNECTION_DISCONNECTED = "connection.disconnected"
CONNECTION_RECONNECTED = "connection.reconnected"
CONNECTION_DELETED = "connection.deleted"
# Codat's answer to "what is this connection's status now" (reconciliation, pre-checks).
CONNECTION_OBSERVED = "connection.observed"
# Results of our own calls to Codat, recorded as events of their own.
PARTNER_CONNECTION_CREATED = "partnerExpenseConnection.created"
PARTNER_CONNECTION_FAILED = "partnerExpenseConnection.failed"
COMPANY_ONBOARDED = "company.onboarded"
# Codat finished reading a company's data (Platform document, webhooks): the first read of a
# connection (`.initial`) and every later one. They name their connections in `dataTypes`.
READ_COMPLETED = "read.completed"
READ_COMPLETED_INITIAL = "read.completed.initial"
READ_EVENTS = frozenset({READ_COMPLETED, READ_COMPLETED_INITIAL})
# Codat's answer to "what is this company's expense sync configuration now" (after we set it,
# reconciliation): `details` holds the ids it returned.
CONFIGURATION_OBSERVED = "expenses.configuration.observed"
CONFIGURATION_FIELDS = ("bankAccount", "supplier", "customer")
# Codat's reports of expense syncs (Sync for Expenses document, webhooks; the legacy
# `Sync Completed`/`Sync Failed` bodies map to the first two), Codat's answer on its sync
# status endpoints, and the transactions of a sync fetched from Codat (both source command).
SYNC_SUCCESSFUL = "expenses.sync.successful"
SYNC_UNSUCCESSFUL = "expenses.sync.unsuccessful"
SYNC_OBSERVED = "expenses.sync.observed"
SYNC_TRANSACTIONS_FETCHED = "expenses.sync.transactionsFetched"
SYNC_EVENTS = frozenset(
    {SYNC_SUCCESSFUL, SYNC_UNSUCCESSFUL, SYNC_OBSERVED, SYNC_TRANSACTIONS_FETCHED}
)

# Order of a connection's life, used to break ties between events generated in the same instant
# (legacy bodies only carry the delivery timestamp, to the second).
_LIFECYCLE_RANK = {
    CONNECTION_CREATED: 0,
    CONNECTION_FAILED: 1,
    CONNECTION_OBSERVED: 2,
    CONNECTION_CONNECTED: 3,
    CONNECTION_DISCONNECTED: 4,
    CONNECTION_RECONNECTED: 5,
    PARTNER_CONNECTION_CREATED: 5,
    CONNECTION_DELETED: 6,
}
CONNECTION_EVENTS = frozenset(_LIFECYCLE_RANK)

# Watermark keys of the two roles a connection can play in onboarding.
ACCOUNTING_ROLE = "role:accounting"
EXPENSE_ROLE = "role:expense"
# Watermark key of the company's expense sync configuration.
CONFIGURATION_KEY = "configuration"

APPLIED = "applied"
STALE = "stale"
IGNORED = "ignored"
DUPLICATE = "duplicate"
FAILED = "failed"
OUTCOMES = (APPLIED, STALE, DUPLICATE, IGNORED, FAILED)


@dataclass(frozen=True)
class Transition:
    """What applying one event did: the new state, the commands it calls for, and its outcome."""

    state: CompanyState
    commands: tuple[Command, ...]
    outcome: str


def initial_state(company_id: str) -> CompanyState:
    # A copy of one empty state (its dicts shared: no state's dicts are ever changed in place,
    # each change copies them), in half the time of CompanyState(company_id=...).
    return evolve(_EMPTY, company_id=company_id)


_EMPTY = CompanyState(company_id="")


def transition(state: CompanyState, event: Event) -> Transition:
    """Apply one event to a company's state."""
    step = _transition(state, event)
    waiting = OnboardingState.AWAITING_CONFIGURATION
    # (An event that left the state as it was cannot have brought the company anywhere.)
    if step.state is not state and step.state.state == waiting and state.state != waiting:
        # Whatever brought the company here (its data read, a relink, a configuration cleared
        # in Codat), the choices are fetched again and Codat's configuration read back.
        step = evolve(step, commands=step.commands + tuple(needed_commands(step.state)))
    return step


def _transition(state: CompanyState, event: Event) -> Transition:
    if state.deleted:
        return Transition(state, (), IGNORED)
    if event.event_type in (COMPANY_CREATED, COMPANY_ONBOARDED):
        return _company_created(state, event)
    if event.event_type == COMPANY_DELETED:
        if _is_stale(state, "company", event):
            return Transition(state, (), STALE)
        return _applied(evolve(state, deleted=True).with_watermark("company", _mark(event)))
    if event.event_type == PARTNER_CONNECTION_FAILED:
        failed = evolve(state, last_error=event.error, last_error_at=event.generated_date)
        return _applied(failed)
    if event.event_type in CONNECTION_EVENTS and event.connection is not None:
        return _connection_event(state, event, event.connection)
    if event.event_type in READ_EVENTS:
        return _data_read(state, event)
    if event.event_type == CONFIGURATION_OBSERVED:
        return _configuration_observed(state, event)
    if event.event_type in SYNC_EVENTS and event.sync is not None:
        return _sync_reported(state, event)
    return Transition(state, (), IGNORED)


def fold(state: CompanyState, events: list[Event]) -> tuple[CompanyState, list[Transition]]:
    """Apply events in order; returns the final state and each event's transition."""
    transitions = []
    for event in events:
        step = transition(state, event)
        transitions.append(step)
        state = step.state
    return state, transitions


def _company_created(state: CompanyState, event: Event) -> Transition:
    if _is_stale(state, "company", event):
        return Transition(state, (), STALE)
    marks = state.marked(("company",), _mark(event))
    return _applied(evolve(state, name=event.company_name or state.name, watermarks=marks))


def _connection_event(state: CompanyState, event: Event, connection: Connection) -> Transition:
    if _is_stale(state, connection.id, event):
        return Transition(state, (), STALE)
    step = _connection_step(state, event, connection)
    if state.watermarks.get(connection.id) == _mark(event) and step.state == state:
        # The newest event about this connection, again (a redelivery under another message
        # id, a replayed copy): it says nothing new and asks for nothing.
        return Transition(state, (), DUPLICATE)
    return step


def _connection_step(state: CompanyState, event: Event, connection: Connection) -> Transition:
    if _is_expense(state, event, connection):
        return _role_event(state, event, connection, EXPENSE_ROLE, state.expense_connection)
    if connection.source_type not in (None, SourceType.ACCOUNTING):
        # Banking, commerce and other connections play no part in onboarding.
        return Transition(state, (), IGNORED)
    return _role_event(state, event, connection, ACCOUNTING_ROLE, state.accounting_connection)


def _role_event(
    state: CompanyState,
    event: Event,
    connection: Connection,
    role: str,
    current: Connection | None,
) -> Transition:
    """An event about the accounting or the expense connection.

    Besides each connection's own watermark, each role keeps the newest event applied to it:
    an older event about another connection than the one followed (even one since deleted)
    is stale, so a late delivery cannot bring back a replaced or deleted connection.
    """
    mark = _mark(event)
    other = current is None or current.id != connection.id
    if other and mark < state.watermarks.get(role, ""):
        return Transition(state, (), STALE)
    marks = state.marked((connection.id, role), mark)
    if other and current is not None and event.event_type == CONNECTION_DELETED:
        return Transition(evolve(state, watermarks=marks), (), IGNORED)
    if role == EXPENSE_ROLE:
        updated = _expense_event(evolve(state, watermarks=marks), event, connection)
        if updated.state in CONNECTED_STATES and state.state not in CONNECTED_STATES:
            # Whatever failed on the way is behind us once the company is ready.
            updated = evolve(updated, last_error=None, last_error_at=None)
        return _applied(updated)
    return _accounting_event(state, marks, event, connection)


def _accounting_event(
    state: CompanyState, marks: dict[str, str], event: Event, connection: Connection
) -> Transition:
    """The accounting connection after an event about it; `marks`: the state's new watermarks."""
    if event.event_type == CONNECTION_DELETED:
        return _applied(evolve(state, watermarks=marks, accounting_connection=None))
    previous = state.accounting_connection
    status = _status_after(event, connection)
    if event.event_type == CONNECTION_FAILED:
        # A failed attempt to link never links: a Linked snapshot in it is not trusted to move
        # the company forward (Codat's example bodies carry PendingAuth; the worker and the
        # sweep ask Codat before anything irreversible). A connection already known Linked
        # stays Linked: the failure was of a later attempt.
        same = previous is not None and previous.id == connection.id
        status = (
            ConnectionStatus.LINKED
            if same and previous and previous.status == ConnectionStatus.LINKED
            else ConnectionStatus.PENDING_AUTH
        )
    if previous is not None and previous.id == connection.id:
        # Legacy bodies carry no platform name or source type: keep what we knew.
        updated = evolve(
            connection,
            status=status,
            platform_key=connection.platform_key or previous.platform_key,
            platform_name=connection.platform_name or previous.platform_name,
            source_type=connection.source_type or previous.source_type,
        )
    else:
        updated = evolve(connection, status=status)
    changes: dict[str, Any] = {"watermarks": marks, "accounting_connection": updated}
    if event.event_type == CONNECTION_FAILED:
        changes["last_error"] = event.error or "Codat reported that linking the connection failed"
        changes["last_error_at"] = event.generated_date
    elif status == ConnectionStatus.LINKED:
        changes["last_error"] = changes["last_error_at"] = None
    new_state = evolve(state, **changes)
    commands: tuple[Command, ...] = ()
    if new_state.state == OnboardingState.LINKED:
        commands = (CreatePartnerExpenseConnection(state.company_id, connection.id),)
    return Transition(new_state, commands, APPLIED)


def _data_read(state: CompanyState, event: Event) -> Transition:
    """A completed read: the first one per connection is kept, whatever order they arrive in.

    Reads never touch the connection watermarks: they say nothing about a connection's status,
    and a read newer than a late `connection.connected` must not make that event stale.
    """
    ids = event.connection_ids or ((event.connection.id,) if event.connection else ())
    if not ids:
        return Transition(state, (), IGNORED)
    date = event.generated_date
    reads = dict(state.data_reads)
    for connection_id in ids:
        if connection_id not in reads or date < reads[connection_id]:
            reads[connection_id] = date
    if reads == state.data_reads:
        # Codat had already finished a read of these connections: the same read again is a
        # duplicate; a later one is news of its own, but the first read is what is kept.
        same = all(state.data_reads[connection_id] == date for connection_id in ids)
        return Transition(state, (), DUPLICATE if same else APPLIED)
    return _applied(evolve(state, data_reads=reads))


def _configuration_observed(state: CompanyState, event: Event) -> Transition:
    """Codat's answer about the configuration: the newest answer wins, as for connections."""
    if _is_stale(state, CONFIGURATION_KEY, event):
        return Transition(state, (), STALE)
    bank_account, supplier, customer = (event.details.get(n) or None for n in CONFIGURATION_FIELDS)
    observed = ExpensesConfiguration(bank_account, supplier, customer, event.generated_date)
    if state.configuration == observed:
        return Transition(state, (), DUPLICATE)
    updated = evolve(state, configuration=observed)
    return _applied(updated.with_watermark(CONFIGURATION_KEY, _mark(event)))


def _sync_reported(state: CompanyState, event: Event) -> Transition:
    """A report about one sync, merged into its record; the state keeps the newest syncs.

    Whatever the company's onboarding state: a sync Codat reports happened. A report about a
    sync older than every one kept only counts towards the newest success or failure (the
    store's table of syncs records it in full).
    """
    report = event.sync
    assert report is not None
    kept = {record.sync_id: record for record in state.syncs}
    before = kept.get(report.sync_id)
    merged = merge_sync(before, report, report_key(event.source, event.generated_date))
    if merged == before:
        return Transition(state, (), DUPLICATE)
    kept[report.sync_id] = merged
    ordered = newest_first(list(kept.values()))
    dropped = ordered[KEPT_SYNCS:]
    updated = evolve(state, syncs=tuple(ordered[:KEPT_SYNCS]))
    for record in dropped:
        if record.outcome == SUCCESSFUL:
            newest = max(record.at, updated.earlier_successful_at or "")
            updated = evolve(updated, earlier_successful_at=newest)
        elif record.outcome is not None:
            newest = max(record.at, updated.earlier_failed_at or "")
            updated = evolve(updated, earlier_failed_at=newest)
    if updated == state:
        # Older than every sync kept, and no news about successes or failures.
        return Transition(state, (), STALE)
    # A failed sync whose transactions nobody listed: ask Codat for them.
    return Transition(updated, tuple(sync_commands(updated)), APPLIED)


def _expense_event(state: CompanyState, event: Event, connection: Connection) -> CompanyState:
    if event.event_type == CONNECTION_DELETED:
        current = state.expense_connection
        if current is not None and current.id == connection.id:
            # Expense events never trigger a creation: say why the company is back in linked
            # and how an operator asks for a new one.
            return evolve(
                state,
                expense_connection=None,
                last_error=f"the partner expense connection {connection.id} was deleted in "
                "Codat; `codat-expenses replay --company "
                f"{state.company_id}` creates a new one",
                last_error_at=event.generated_date,
            )
        return state
    expense = evolve(
        connection, status=_status_after(event, connection), source_type=SourceType.EXPENSE
    )
    return evolve(state, expense_connection=expense)


def _status_after(event: Event, connection: Connection) -> str:
    if event.event_type in (CONNECTION_CREATED, CONNECTION_FAILED):
        return (
            connection.status
            if connection.status == ConnectionStatus.LINKED
            else ConnectionStatus.PENDING_AUTH
        )
    if event.event_type in (CONNECTION_CONNECTED, CONNECTION_RECONNECTED):
        return ConnectionStatus.LINKED
    if event.event_type == PARTNER_CONNECTION_CREATED:
        return connection.status or ConnectionStatus.LINKED
    if event.event_type == CONNECTION_DISCONNECTED:
        return (
            ConnectionStatus.DEAUTHORIZED
            if connection.status == ConnectionStatus.DEAUTHORIZED
            else ConnectionStatus.UNLINKED
        )
    return connection.status  # CONNECTION_OBSERVED: Codat's own answer


def _is_expense(state: CompanyState, event: Event, connection: Connection) -> bool:
    if (
        event.event_type == PARTNER_CONNECTION_CREATED
        or connection.source_type == SourceType.EXPENSE
    ):
        return True
    known = state.expense_connection
    return connection.source_type is None and known is not None and known.id == connection.id


def _mark(event: Event) -> str:
    return f"{event.generated_date}#{_LIFECYCLE_RANK.get(event.event_type, 0)}"


def _is_stale(state: CompanyState, key: str, event: Event) -> bool:
    return _mark(event) < state.watermarks.get(key, "")


def _applied(state: CompanyState) -> Transition:
    return Transition(state, (), APPLIED)

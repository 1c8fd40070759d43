"""Table-driven unit tests of the pure onboarding state machine, `handlers.transitions`."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from handlers.commands import (
    CreatePartnerExpenseConnection,
    FetchExpenseOptions,
    ReadExpenseConfiguration,
    needed_commands,
)
from handlers.events import Connection, ConnectionStatus, Event, SourceType
from handlers.state import STATES, CompanyState, OnboardingState
from handlers.transitions import (
    APPLIED,
    COMPANY_CREATED,
    COMPANY_DELETED,
    CONFIGURATION_OBSERVED,
    CONNECTION_CONNECTED,
    CONNECTION_CREATED,
    CONNECTION_DELETED,
    CONNECTION_DISCONNECTED,
    CONNECTION_FAILED,
    CONNECTION_OBSERVED,
    CONNECTION_RECONNECTED,
    DUPLICATE,
    IGNORED,
    PARTNER_CONNECTION_CREATED,
    PARTNER_CONNECTION_FAILED,
    READ_COMPLETED,
    READ_COMPLETED_INITIAL,
    STALE,
    Transition,
    fold,
    initial_state,
    transition,
)

COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"
ACC = "51baa045-4836-4317-a42e-3542e991e581"
ACC2 = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"
EXP = "2e9d2c44-f675-40ba-8049-353bfcb5e171"
BANK = "9fd6a1c8-2a6e-4b0e-9d3a-6d1f3c8e1a11"


def at(second: int) -> str:
    """A normalised generatedDate, `second` seconds after a fixed instant."""
    minutes, seconds = divmod(second, 60)
    return f"2024-03-01T10:{minutes:02d}:{seconds:02d}.0000000Z"


def acc(
    status: str = ConnectionStatus.PENDING_AUTH,
    connection_id: str = ACC,
    source_type: str | None = SourceType.ACCOUNTING,
) -> Connection:
    legacy = source_type is None
    return Connection(
        id=connection_id,
        status=status,
        platform_key="gbol",
        platform_name=None if legacy else "Xero",
        source_type=source_type,
    )


def exp(status: str = ConnectionStatus.LINKED, connection_id: str = EXP) -> Connection:
    return Connection(
        id=connection_id,
        status=status,
        platform_key="xpns",
        platform_name="Partner Expense",
        source_type=SourceType.EXPENSE,
    )


def ev(
    event_type: str,
    second: int,
    connection: Connection | None = None,
    *,
    error: str | None = None,
    name: str | None = None,
    details: dict[str, str] | None = None,
    connection_ids: tuple[str, ...] = (),
) -> Event:
    return Event(
        event_type=event_type,
        company_id=COMPANY,
        generated_date=at(second),
        company_name=name,
        connection=connection,
        error=error,
        details=details or {},
        connection_ids=connection_ids,
    )


def read(second: int, connection_id: str = ACC, event_type: str = READ_COMPLETED_INITIAL) -> Event:
    """Codat finished reading a connection's data, as intake maps the webhook."""
    return ev(event_type, second, Connection(connection_id, ""), connection_ids=(connection_id,))


CHOSEN = {"bankAccount": BANK, "supplier": "SUP-1", "customer": "CUS-1"}


def observed(second: int, **ids: str) -> Event:
    """Codat's answer about the configuration, as the worker records it."""
    return ev(CONFIGURATION_OBSERVED, second, details=ids, name=None)


def build(*events: Event) -> CompanyState:
    state, _ = fold(initial_state(COMPANY), list(events))
    return state


# Histories that reach each state, built with the handlers themselves.
H_CREATED = (ev(COMPANY_CREATED, 0, name="Sawayn Group"),)
H_PENDING = (*H_CREATED, ev(CONNECTION_CREATED, 1, acc(ConnectionStatus.PENDING_AUTH)))
H_LINKED = (*H_PENDING, ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED)))
H_READY = (*H_LINKED, ev(PARTNER_CONNECTION_CREATED, 3, exp()))
H_DISCONNECTED = (*H_READY, ev(CONNECTION_DISCONNECTED, 4, acc(ConnectionStatus.UNLINKED)))
H_DELETED = (*H_READY, ev(COMPANY_DELETED, 5, name="Sawayn Group"))
H_AWAITING = (*H_READY, read(6))
H_CONFIGURED = (*H_AWAITING, observed(7, **CHOSEN))


@dataclass(frozen=True)
class Case:
    """Apply `event` to the state built from `history`; expect this outcome."""

    name: str
    history: tuple[Event, ...]
    event: Event
    outcome: str
    state: str
    commands: tuple[CreatePartnerExpenseConnection, ...] = ()
    accounting: tuple[str, str] | None = None  # (id, status)
    expense: str | None = None
    unchanged: bool = False  # the whole CompanyState must be left as it was


CREATE_PARTNER = (CreatePartnerExpenseConnection(COMPANY, ACC),)
CREATE_PARTNER_2 = (CreatePartnerExpenseConnection(COMPANY, ACC2),)

CASES = [
    # -- every state of PRODUCT.md is reached ------------------------------------------------
    Case("company.created -> created", (), H_CREATED[0], APPLIED, OnboardingState.CREATED),
    Case(
        "connection.created -> pending_auth",
        H_CREATED,
        ev(CONNECTION_CREATED, 1, acc(ConnectionStatus.PENDING_AUTH)),
        APPLIED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
    ),
    Case(
        "connection.created without company.created -> pending_auth",
        (),
        ev(CONNECTION_CREATED, 1, acc(ConnectionStatus.PENDING_AUTH)),
        APPLIED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
    ),
    Case(
        "connection.connected -> linked, one create-partner command",
        H_PENDING,
        ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.LINKED,
        CREATE_PARTNER,
        accounting=(ACC, ConnectionStatus.LINKED),
    ),
    Case(
        "connection.connected before connection.created -> linked, one command",
        H_CREATED,
        ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.LINKED,
        CREATE_PARTNER,
        accounting=(ACC, ConnectionStatus.LINKED),
    ),
    Case(
        "partnerExpenseConnection.created -> ready",
        H_LINKED,
        ev(PARTNER_CONNECTION_CREATED, 3, exp()),
        APPLIED,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
    ),
    Case(
        "connection.disconnected Unlinked -> disconnected",
        H_READY,
        ev(CONNECTION_DISCONNECTED, 4, acc(ConnectionStatus.UNLINKED)),
        APPLIED,
        OnboardingState.DISCONNECTED,
        accounting=(ACC, ConnectionStatus.UNLINKED),
        expense=EXP,
    ),
    Case(
        "connection.disconnected Deauthorized -> disconnected, Deauthorized",
        H_READY,
        ev(CONNECTION_DISCONNECTED, 4, acc(ConnectionStatus.DEAUTHORIZED)),
        APPLIED,
        OnboardingState.DISCONNECTED,
        accounting=(ACC, ConnectionStatus.DEAUTHORIZED),
        expense=EXP,
    ),
    Case(
        "connection.disconnected with a Linked snapshot still means Unlinked",
        H_READY,
        ev(CONNECTION_DISCONNECTED, 4, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.DISCONNECTED,
        accounting=(ACC, ConnectionStatus.UNLINKED),
        expense=EXP,
    ),
    Case(
        "company.deleted -> deleted",
        H_READY,
        ev(COMPANY_DELETED, 5),
        APPLIED,
        OnboardingState.DELETED,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
    ),
    # -- reconnection ---------------------------------------------------------------------------
    Case(
        "reconnected with an existing expense connection -> ready, no command",
        H_DISCONNECTED,
        ev(CONNECTION_RECONNECTED, 6, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
    ),
    Case(
        "reconnected with no expense connection -> linked, one command",
        (*H_LINKED, ev(CONNECTION_DISCONNECTED, 3, acc(ConnectionStatus.DEAUTHORIZED))),
        ev(CONNECTION_RECONNECTED, 4, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.LINKED,
        CREATE_PARTNER,
        accounting=(ACC, ConnectionStatus.LINKED),
    ),
    # -- expense connection events never count as the accounting connection ---------------------
    Case(
        "Expense connection.created while pending_auth -> expense only",
        H_PENDING,
        ev(CONNECTION_CREATED, 2, exp(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
        expense=EXP,
    ),
    Case(
        "Expense connection.connected while pending_auth -> no command",
        H_PENDING,
        ev(CONNECTION_CONNECTED, 2, exp(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
        expense=EXP,
    ),
    Case(
        "Expense connection.connected with no accounting connection -> created",
        H_CREATED,
        ev(CONNECTION_CONNECTED, 2, exp(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.CREATED,
        expense=EXP,
    ),
    Case(
        "Expense connection.connected while linked -> ready, no command",
        H_LINKED,
        ev(CONNECTION_CONNECTED, 3, exp(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
    ),
    Case(
        "Expense connection.disconnected while ready -> stays ready, no command",
        H_READY,
        ev(CONNECTION_DISCONNECTED, 4, exp(ConnectionStatus.UNLINKED)),
        APPLIED,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
    ),
    Case(
        "Expense connection.reconnected while disconnected -> stays disconnected",
        H_DISCONNECTED,
        ev(CONNECTION_RECONNECTED, 6, exp(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.DISCONNECTED,
        accounting=(ACC, ConnectionStatus.UNLINKED),
        expense=EXP,
    ),
    Case(
        "Expense connection.deleted while ready -> linked, and still no command",
        H_READY,
        ev(CONNECTION_DELETED, 4, exp(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.LINKED,
        accounting=(ACC, ConnectionStatus.LINKED),
    ),
    Case(
        "legacy event (no sourceType) for the known expense connection -> expense only",
        H_READY,
        ev(CONNECTION_DISCONNECTED, 4, replace(exp(ConnectionStatus.UNLINKED), source_type=None)),
        APPLIED,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
    ),
    # -- other source types play no part ------------------------------------------------------
    Case(
        "Banking connection.created is ignored",
        H_CREATED,
        ev(CONNECTION_CREATED, 1, acc(ConnectionStatus.PENDING_AUTH, BANK, "Banking")),
        IGNORED,
        OnboardingState.CREATED,
        unchanged=True,
    ),
    Case(
        "Banking connection.connected while pending_auth is ignored",
        H_PENDING,
        ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED, BANK, "Banking")),
        IGNORED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
        unchanged=True,
    ),
    Case(
        "Banking connection.deleted while ready is ignored",
        H_READY,
        ev(CONNECTION_DELETED, 4, acc(ConnectionStatus.LINKED, BANK, "Banking")),
        IGNORED,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
        unchanged=True,
    ),
    # -- connection.deleted is driven by the event type ---------------------------------------
    Case(
        "connection.deleted with status Linked -> created",
        H_READY,
        ev(CONNECTION_DELETED, 4, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.CREATED,
        expense=EXP,
    ),
    Case(
        "connection.deleted with status Linked while linked -> created, no command",
        H_LINKED,
        ev(CONNECTION_DELETED, 3, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.CREATED,
    ),
    Case(
        "connection.deleted of an older accounting connection changes nothing",
        (
            *H_LINKED,
            ev(CONNECTION_DELETED, 3, acc(ConnectionStatus.LINKED)),
            ev(CONNECTION_CREATED, 4, acc(ConnectionStatus.PENDING_AUTH, ACC2)),
        ),
        ev(CONNECTION_DELETED, 5, acc(ConnectionStatus.LINKED)),
        IGNORED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC2, ConnectionStatus.PENDING_AUTH),
    ),
    Case(
        "a second accounting connection after a delete -> linked, command for it",
        (
            *H_LINKED,
            ev(CONNECTION_DELETED, 3, acc(ConnectionStatus.LINKED)),
            ev(CONNECTION_CREATED, 4, acc(ConnectionStatus.PENDING_AUTH, ACC2)),
        ),
        ev(CONNECTION_CONNECTED, 5, acc(ConnectionStatus.LINKED, ACC2)),
        APPLIED,
        OnboardingState.LINKED,
        CREATE_PARTNER_2,
        accounting=(ACC2, ConnectionStatus.LINKED),
    ),
    # -- stale events ---------------------------------------------------------------------------
    Case(
        "older connection.created after connected is stale",
        H_LINKED,
        ev(CONNECTION_CREATED, 1, acc(ConnectionStatus.PENDING_AUTH)),
        STALE,
        OnboardingState.LINKED,
        accounting=(ACC, ConnectionStatus.LINKED),
        unchanged=True,
    ),
    Case(
        "older connection.connected after disconnected is stale, no command",
        H_DISCONNECTED,
        ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED)),
        STALE,
        OnboardingState.DISCONNECTED,
        accounting=(ACC, ConnectionStatus.UNLINKED),
        expense=EXP,
        unchanged=True,
    ),
    Case(
        "older connection.disconnected after reconnected is stale",
        (*H_DISCONNECTED, ev(CONNECTION_RECONNECTED, 9, acc(ConnectionStatus.LINKED))),
        ev(CONNECTION_DISCONNECTED, 8, acc(ConnectionStatus.DEAUTHORIZED)),
        STALE,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
        unchanged=True,
    ),
    Case(
        "older connection.deleted after a newer connected is stale",
        H_LINKED,
        ev(CONNECTION_DELETED, 1, acc(ConnectionStatus.LINKED)),
        STALE,
        OnboardingState.LINKED,
        accounting=(ACC, ConnectionStatus.LINKED),
        unchanged=True,
    ),
    Case(
        "older connection.failed after connected is stale, no error recorded",
        H_LINKED,
        ev(CONNECTION_FAILED, 1, acc(ConnectionStatus.PENDING_AUTH), error="user cancelled"),
        STALE,
        OnboardingState.LINKED,
        accounting=(ACC, ConnectionStatus.LINKED),
        unchanged=True,
    ),
    Case(
        "older Expense event after a newer one for that connection is stale",
        (*H_READY, ev(CONNECTION_DISCONNECTED, 8, exp(ConnectionStatus.UNLINKED))),
        ev(CONNECTION_CONNECTED, 7, exp(ConnectionStatus.LINKED)),
        STALE,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
        unchanged=True,
    ),
    Case(
        "same instant: connection.created after connected is stale (lifecycle order)",
        (*H_CREATED, ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED))),
        ev(CONNECTION_CREATED, 2, acc(ConnectionStatus.PENDING_AUTH)),
        STALE,
        OnboardingState.LINKED,
        accounting=(ACC, ConnectionStatus.LINKED),
        unchanged=True,
    ),
    Case(
        "older company.created after a newer one is stale",
        (ev(COMPANY_CREATED, 5, name="New name"),),
        ev(COMPANY_CREATED, 1, name="Old name"),
        STALE,
        OnboardingState.CREATED,
        unchanged=True,
    ),
    Case(
        "an event for an accounting connection older than the followed one is stale",
        (
            *H_LINKED,
            ev(CONNECTION_DELETED, 3, acc(ConnectionStatus.LINKED)),
            ev(CONNECTION_CREATED, 4, acc(ConnectionStatus.PENDING_AUTH, ACC2)),
        ),
        ev(CONNECTION_DISCONNECTED, 2, acc(ConnectionStatus.UNLINKED)),
        STALE,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC2, ConnectionStatus.PENDING_AUTH),
    ),
    Case(
        "an older event of a replaced connection is stale even once the new one is deleted",
        (
            *H_LINKED,
            ev(CONNECTION_DELETED, 3, acc(ConnectionStatus.LINKED)),
            ev(CONNECTION_CREATED, 4, acc(ConnectionStatus.PENDING_AUTH, ACC2)),
            ev(CONNECTION_DELETED, 5, acc(ConnectionStatus.PENDING_AUTH, ACC2)),
        ),
        ev(CONNECTION_RECONNECTED, 2, acc(ConnectionStatus.LINKED)),
        STALE,
        OnboardingState.CREATED,
    ),
    Case(
        "a late connected of a connection deleted before the next was created is stale",
        (
            ev(CONNECTION_CREATED, 4, acc(ConnectionStatus.PENDING_AUTH, ACC2)),
            ev(CONNECTION_DELETED, 5, acc(ConnectionStatus.PENDING_AUTH, ACC2)),
        ),
        ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED)),
        STALE,
        OnboardingState.CREATED,
    ),
    Case(
        "an older event of a replaced expense connection is stale",
        (
            *H_READY,
            ev(CONNECTION_DELETED, 4, exp(ConnectionStatus.LINKED)),
            ev(CONNECTION_CREATED, 5, exp(ConnectionStatus.LINKED, "exp-2")),
        ),
        ev(CONNECTION_RECONNECTED, 3, exp(ConnectionStatus.LINKED)),
        STALE,
        OnboardingState.READY,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense="exp-2",
    ),
    # -- deleted companies ignore everything later ----------------------------------------------
    Case(
        "after company.deleted: connection.connected is ignored",
        H_DELETED,
        ev(CONNECTION_CONNECTED, 9, acc(ConnectionStatus.LINKED, ACC2)),
        IGNORED,
        OnboardingState.DELETED,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
        unchanged=True,
    ),
    Case(
        "after company.deleted: company.created is ignored",
        H_DELETED,
        ev(COMPANY_CREATED, 9, name="Back again"),
        IGNORED,
        OnboardingState.DELETED,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
        unchanged=True,
    ),
    Case(
        "after company.deleted: connection.deleted is ignored",
        H_DELETED,
        ev(CONNECTION_DELETED, 9, acc(ConnectionStatus.LINKED)),
        IGNORED,
        OnboardingState.DELETED,
        accounting=(ACC, ConnectionStatus.LINKED),
        expense=EXP,
        unchanged=True,
    ),
    Case(
        "after company.deleted: partnerExpenseConnection.created is ignored",
        (*H_LINKED, ev(COMPANY_DELETED, 3)),
        ev(PARTNER_CONNECTION_CREATED, 4, exp()),
        IGNORED,
        OnboardingState.DELETED,
        accounting=(ACC, ConnectionStatus.LINKED),
        unchanged=True,
    ),
    # -- failures -------------------------------------------------------------------------------
    Case(
        "connection.failed keeps pending_auth",
        H_PENDING,
        ev(
            CONNECTION_FAILED,
            2,
            acc(ConnectionStatus.PENDING_AUTH),
            error="400 Bad Request user cancelled",
        ),
        APPLIED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
    ),
    Case(
        "partnerExpenseConnection.failed keeps linked",
        H_LINKED,
        ev(PARTNER_CONNECTION_FAILED, 3, error="402 account limit"),
        APPLIED,
        OnboardingState.LINKED,
        accounting=(ACC, ConnectionStatus.LINKED),
    ),
    # -- what Codat answered when asked ---------------------------------------------------------
    Case(
        "connection.observed Linked while pending_auth -> linked, one command",
        H_PENDING,
        ev(CONNECTION_OBSERVED, 2, acc(ConnectionStatus.LINKED)),
        APPLIED,
        OnboardingState.LINKED,
        CREATE_PARTNER,
        accounting=(ACC, ConnectionStatus.LINKED),
    ),
    Case(
        "connection.observed Unlinked while linked -> disconnected",
        H_LINKED,
        ev(CONNECTION_OBSERVED, 3, acc(ConnectionStatus.UNLINKED)),
        APPLIED,
        OnboardingState.DISCONNECTED,
        accounting=(ACC, ConnectionStatus.UNLINKED),
    ),
    # -- unknown and malformed events -----------------------------------------------------------
    Case(
        "an unknown event type is ignored",
        H_PENDING,
        ev("read.completed", 2),
        IGNORED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
        unchanged=True,
    ),
    Case(
        "a connection event without a connection is ignored",
        H_PENDING,
        ev(CONNECTION_CONNECTED, 2),
        IGNORED,
        OnboardingState.PENDING_AUTH,
        accounting=(ACC, ConnectionStatus.PENDING_AUTH),
        unchanged=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_transition_table(case: Case) -> None:
    before = build(*case.history)
    step = transition(before, case.event)
    assert step.outcome == case.outcome
    assert step.state.state == case.state
    assert step.commands == case.commands
    accounting = step.state.accounting_connection
    found = (accounting.id, accounting.status) if accounting is not None else None
    assert found == case.accounting
    expense = step.state.expense_connection
    assert (expense.id if expense is not None else None) == case.expense
    if case.unchanged:
        assert step.state == before


def test_every_product_state_is_reached() -> None:
    """The six states PRODUCT.md names, and a history the handlers take to each of them."""
    expected = [
        "created",
        "pending_auth",
        "linked",
        "ready",
        "awaiting_configuration",
        "configured",
        "disconnected",
        "deleted",
    ]
    assert list(STATES) == expected
    histories = (
        H_CREATED,
        H_PENDING,
        H_LINKED,
        H_READY,
        H_AWAITING,
        H_CONFIGURED,
        H_DISCONNECTED,
        H_DELETED,
    )
    assert [build(*h).state for h in histories] == expected


def test_initial_state_is_created_with_nothing_known() -> None:
    state = initial_state(COMPANY)
    assert state.state == OnboardingState.CREATED
    assert state.accounting_connection is None
    assert state.expense_connection is None
    assert state.watermarks == {}


def test_connection_connected_emits_exactly_one_create_partner_command() -> None:
    state, steps = fold(initial_state(COMPANY), list(H_LINKED))
    commands = [command for step in steps for command in step.commands]
    assert commands == [CreatePartnerExpenseConnection(COMPANY, ACC)]
    assert commands[0].kind == "create_partner_expense_connection"
    assert state.state == OnboardingState.LINKED


def test_full_onboarding_emits_one_command_in_total() -> None:
    history = [
        *H_READY,
        ev(CONNECTION_DISCONNECTED, 4, acc(ConnectionStatus.DEAUTHORIZED)),
        ev(CONNECTION_RECONNECTED, 5, acc(ConnectionStatus.LINKED)),
        ev(CONNECTION_DISCONNECTED, 6, acc(ConnectionStatus.UNLINKED)),
        ev(CONNECTION_RECONNECTED, 7, acc(ConnectionStatus.LINKED)),
        ev(CONNECTION_CONNECTED, 8, exp(ConnectionStatus.LINKED)),
    ]
    state, steps = fold(initial_state(COMPANY), history)
    assert [step.outcome for step in steps] == [APPLIED] * len(history)
    assert sum(len(step.commands) for step in steps) == 1
    assert state.state == OnboardingState.READY


def test_expense_events_never_emit_a_command_from_any_state() -> None:
    histories = (H_CREATED, H_PENDING, H_LINKED, H_READY, H_DISCONNECTED)
    types = (
        CONNECTION_CREATED,
        CONNECTION_CONNECTED,
        CONNECTION_FAILED,
        CONNECTION_DISCONNECTED,
        CONNECTION_RECONNECTED,
        CONNECTION_DELETED,
        CONNECTION_OBSERVED,
        PARTNER_CONNECTION_CREATED,
    )
    for history in histories:
        before = build(*history)
        for event_type in types:
            for status in (
                ConnectionStatus.PENDING_AUTH,
                ConnectionStatus.LINKED,
                ConnectionStatus.UNLINKED,
                ConnectionStatus.DEAUTHORIZED,
            ):
                step = transition(before, ev(event_type, 30, exp(status)))
                assert step.commands == (), (history[-1].event_type, event_type, status)
                assert step.state.accounting_connection == before.accounting_connection


def test_connection_failed_keeps_pending_auth_and_records_the_error() -> None:
    before = build(*H_PENDING)
    failed = ev(
        CONNECTION_FAILED,
        2,
        acc(ConnectionStatus.PENDING_AUTH),
        error="400 Bad Request user cancelled",
    )
    step = transition(before, failed)
    assert step.state.state == OnboardingState.PENDING_AUTH
    assert step.state.last_error == "400 Bad Request user cancelled"
    assert step.state.last_error_at == at(2)
    assert step.commands == ()


def test_connection_failed_without_a_message_still_says_why() -> None:
    step = transition(
        build(*H_PENDING), ev(CONNECTION_FAILED, 2, acc(ConnectionStatus.PENDING_AUTH))
    )
    assert step.state.state == OnboardingState.PENDING_AUTH
    assert step.state.last_error
    assert "fail" in step.state.last_error


def test_repeated_connection_failed_keeps_pending_auth_and_clears_on_connect() -> None:
    state = build(
        *H_PENDING,
        ev(CONNECTION_FAILED, 2, acc(ConnectionStatus.PENDING_AUTH), error="cancelled"),
        ev(CONNECTION_FAILED, 3, acc(ConnectionStatus.PENDING_AUTH), error="cancelled again"),
    )
    assert state.state == OnboardingState.PENDING_AUTH
    assert state.last_error == "cancelled again"
    step = transition(state, ev(CONNECTION_CONNECTED, 4, acc(ConnectionStatus.LINKED)))
    assert step.state.state == OnboardingState.LINKED
    assert step.state.last_error is None
    assert step.state.last_error_at is None


def test_connection_failed_with_a_linked_snapshot_never_links() -> None:
    """Driven by the event type (CODAT.md): a failed attempt does not move pending_auth on,
    whatever status its snapshot carries, and asks for nothing."""
    step = transition(
        build(*H_PENDING), ev(CONNECTION_FAILED, 2, acc(ConnectionStatus.LINKED), error="cancelled")
    )
    assert step.outcome == APPLIED
    assert step.state.state == OnboardingState.PENDING_AUTH
    assert step.state.accounting_connection == acc(ConnectionStatus.PENDING_AUTH)
    assert step.state.last_error == "cancelled"
    assert step.commands == ()


def test_connection_failed_after_linked_stays_linked_and_then_clears_on_connect() -> None:
    """A connection already known Linked stays Linked when a later attempt fails."""
    step = transition(
        build(*H_LINKED), ev(CONNECTION_FAILED, 3, acc(ConnectionStatus.LINKED), error="expired")
    )
    assert step.state.state == OnboardingState.LINKED
    assert step.state.accounting_connection == acc(ConnectionStatus.LINKED)
    assert step.state.last_error == "expired"
    again = transition(step.state, ev(CONNECTION_RECONNECTED, 4, acc(ConnectionStatus.LINKED)))
    assert again.state.state == OnboardingState.LINKED
    assert again.state.last_error is None


def test_partner_connection_failed_records_the_error() -> None:
    step = transition(build(*H_LINKED), ev(PARTNER_CONNECTION_FAILED, 3, error="402 limit"))
    assert step.state.last_error == "402 limit"
    assert step.state.last_error_at == at(3)
    assert step.commands == ()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (ConnectionStatus.DEAUTHORIZED, ConnectionStatus.DEAUTHORIZED),
        (ConnectionStatus.UNLINKED, ConnectionStatus.UNLINKED),
        (ConnectionStatus.PENDING_AUTH, ConnectionStatus.UNLINKED),
    ],
)
def test_disconnected_tells_deauthorized_from_unlinked(status: str, expected: str) -> None:
    step = transition(build(*H_READY), ev(CONNECTION_DISCONNECTED, 4, acc(status)))
    assert step.state.state == OnboardingState.DISCONNECTED
    assert step.state.accounting_connection == acc(expected)
    assert step.commands == ()


def test_connection_deleted_by_event_type_even_when_status_says_linked() -> None:
    step = transition(build(*H_LINKED), ev(CONNECTION_DELETED, 3, acc(ConnectionStatus.LINKED)))
    assert step.outcome == APPLIED
    assert step.state.accounting_connection is None
    assert step.state.state == OnboardingState.CREATED
    assert step.commands == ()
    # A later, older copy of connected for that deleted connection does not bring it back.
    late = transition(step.state, ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED)))
    assert late.outcome == STALE
    assert late.state.state == OnboardingState.CREATED
    assert late.commands == ()


def test_stale_event_is_stale_per_connection_not_globally() -> None:
    # An expense event newer than anything else does not make an older accounting event stale.
    state = build(*H_PENDING, ev(CONNECTION_CONNECTED, 50, exp(ConnectionStatus.LINKED)))
    step = transition(state, ev(CONNECTION_CONNECTED, 10, acc(ConnectionStatus.LINKED)))
    assert step.outcome == APPLIED
    assert step.state.state == OnboardingState.READY
    assert step.commands == ()


@pytest.mark.parametrize(
    "history", [H_PENDING, H_LINKED, H_READY, H_DISCONNECTED], ids=lambda h: h[-1].event_type
)
def test_duplicate_of_the_newest_event_changes_nothing(history: tuple[Event, ...]) -> None:
    """The newest event again (another message id, a replayed copy) is a duplicate: in
    `linked` it must not ask for a second partner expense connection."""
    before = build(*history)
    step = transition(before, history[-1])
    assert step == Transition(before, (), DUPLICATE)


def test_same_instant_but_different_news_is_not_a_duplicate() -> None:
    """Equal marks with new facts (a legacy body to the second) still apply."""
    before = build(*H_PENDING)
    renamed = replace(acc(ConnectionStatus.PENDING_AUTH), platform_name="Xero (renamed)")
    step = transition(before, ev(CONNECTION_CREATED, 1, renamed))
    assert step.outcome == APPLIED
    assert step.state.accounting_connection is not None
    assert step.state.accounting_connection.platform_name == "Xero (renamed)"


def test_legacy_event_keeps_platform_name_and_source_type() -> None:
    state = build(*H_PENDING)
    step = transition(
        state, ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED, source_type=None))
    )
    accounting = step.state.accounting_connection
    assert accounting == Connection(
        ACC, ConnectionStatus.LINKED, "gbol", "Xero", SourceType.ACCOUNTING
    )
    assert step.commands == CREATE_PARTNER


def test_company_created_sets_the_name_and_deleted_keeps_it() -> None:
    state = build(ev(COMPANY_CREATED, 0, name="Sawayn Group"))
    assert state.name == "Sawayn Group"
    deleted = transition(state, ev(COMPANY_DELETED, 1))
    assert deleted.state.deleted
    assert deleted.state.name == "Sawayn Group"


def test_state_round_trips_through_its_dict() -> None:
    for history in (
        H_CREATED,
        H_PENDING,
        H_LINKED,
        H_READY,
        H_AWAITING,
        H_CONFIGURED,
        H_DISCONNECTED,
        H_DELETED,
    ):
        state = build(*history)
        assert CompanyState.from_dict(state.to_dict()) == state


# -- after ready: Codat's data read and the expense sync configuration ----------------------------


@pytest.mark.parametrize("event_type", [READ_COMPLETED_INITIAL, READ_COMPLETED])
def test_read_of_the_accounting_connection_moves_ready_to_awaiting_configuration(
    event_type: str,
) -> None:
    step = transition(build(*H_READY), read(6, event_type=event_type))
    assert step.outcome == APPLIED
    assert step.state.state == OnboardingState.AWAITING_CONFIGURATION
    assert step.state.data_read_at == at(6)
    assert step.commands == AWAITING_COMMANDS


AWAITING_COMMANDS = (FetchExpenseOptions(COMPANY, ACC), ReadExpenseConfiguration(COMPANY, ACC))


def test_only_entering_awaiting_configuration_asks_for_the_options_and_the_configuration() -> None:
    """Each arrival fetches the choices and reads Codat's configuration once; staying (an
    unset configuration observed, a later read) asks for nothing, and configured asks nothing."""
    awaiting = build(*H_AWAITING)
    assert transition(awaiting, observed(7)).commands == ()
    assert transition(awaiting, read(8, event_type=READ_COMPLETED)).commands == ()
    configured = transition(awaiting, observed(7, **CHOSEN))
    assert configured.state.state == OnboardingState.CONFIGURED
    assert configured.commands == ()
    assert needed_commands(configured.state) == []
    # Cleared in Codat (seen by the sweep): waiting again, and Codat is asked again.
    cleared = transition(configured.state, observed(9))
    assert cleared.state.state == OnboardingState.AWAITING_CONFIGURATION
    assert cleared.commands == AWAITING_COMMANDS
    assert needed_commands(cleared.state) == list(AWAITING_COMMANDS)


def test_read_of_another_connection_leaves_the_company_ready() -> None:
    step = transition(build(*H_READY), read(6, connection_id=EXP))
    assert step.state.state == OnboardingState.READY
    assert step.state.data_read_at is None


def test_read_naming_several_connections_counts_for_each() -> None:
    both = ev(READ_COMPLETED, 6, Connection(EXP, ""), connection_ids=(EXP, ACC))
    step = transition(build(*H_READY), both)
    assert step.state.state == OnboardingState.AWAITING_CONFIGURATION
    assert step.state.data_reads == {EXP: at(6), ACC: at(6)}


def test_read_with_no_connection_is_ignored() -> None:
    before = build(*H_READY)
    assert transition(before, ev(READ_COMPLETED_INITIAL, 6)) == Transition(before, (), IGNORED)


def test_read_before_the_connections_exist_is_kept_for_when_they_do() -> None:
    """Out of order: the read arrives first; the company stays where its connections put it."""
    early = build(*H_CREATED, read(6))
    assert early.state == OnboardingState.CREATED
    linked = build(*H_CREATED, read(6), *H_LINKED[1:])
    assert linked.state == OnboardingState.LINKED
    ready = transition(linked, H_READY[-1])
    assert ready.state.state == OnboardingState.AWAITING_CONFIGURATION


def test_a_read_never_makes_an_older_connection_event_stale() -> None:
    """Reads leave the connection watermarks alone: a late `connected` still applies."""
    state = build(*H_PENDING, read(9))
    step = transition(state, ev(CONNECTION_CONNECTED, 2, acc(ConnectionStatus.LINKED)))
    assert step.outcome == APPLIED
    assert step.commands == CREATE_PARTNER


def test_the_first_read_is_kept_whatever_the_order() -> None:
    later_first = build(*H_READY, read(20, event_type=READ_COMPLETED), read(6))
    in_order = build(*H_READY, read(6), read(20, event_type=READ_COMPLETED))
    assert later_first.data_read_at == in_order.data_read_at == at(6)
    assert later_first == in_order


def test_the_same_read_again_is_a_duplicate_and_a_later_one_applies() -> None:
    before = build(*H_AWAITING)
    assert transition(before, read(6)) == Transition(before, (), DUPLICATE)
    later = transition(before, read(30, event_type=READ_COMPLETED))
    assert later.outcome == APPLIED
    assert later.state == before


def test_configuration_observed_with_all_three_moves_to_configured() -> None:
    step = transition(build(*H_AWAITING), observed(7, **CHOSEN))
    assert step.outcome == APPLIED
    assert step.state.state == OnboardingState.CONFIGURED
    configuration = step.state.configuration
    assert configuration is not None
    assert (configuration.bank_account, configuration.supplier, configuration.customer) == (
        BANK,
        "SUP-1",
        "CUS-1",
    )
    assert configuration.checked_at == at(7)
    assert step.commands == ()


@pytest.mark.parametrize("missing", ["bankAccount", "supplier", "customer"])
def test_configuration_missing_one_id_is_not_configured(missing: str) -> None:
    partial = {name: value for name, value in CHOSEN.items() if name != missing}
    step = transition(build(*H_AWAITING), observed(7, **partial))
    assert step.state.state == OnboardingState.AWAITING_CONFIGURATION
    assert step.state.configuration is not None
    assert step.state.configuration.checked_at == at(7)


def test_configuration_before_the_read_waits_for_the_read() -> None:
    before_read = build(*H_READY, observed(7, **CHOSEN))
    assert before_read.state == OnboardingState.READY
    assert transition(before_read, read(8)).state.state == OnboardingState.CONFIGURED


def test_newest_configuration_wins_and_an_older_answer_is_stale() -> None:
    cleared = build(*H_CONFIGURED, observed(9))
    assert cleared.state == OnboardingState.AWAITING_CONFIGURATION
    late = transition(cleared, observed(8, **CHOSEN))
    assert late == Transition(cleared, (), STALE)
    assert transition(cleared, observed(9)) == Transition(cleared, (), DUPLICATE)


def test_configured_company_disconnected_comes_back_configured_on_reconnect() -> None:
    down = build(*H_CONFIGURED, ev(CONNECTION_DISCONNECTED, 8, acc(ConnectionStatus.UNLINKED)))
    assert down.state == OnboardingState.DISCONNECTED
    back = transition(down, ev(CONNECTION_RECONNECTED, 9, acc(ConnectionStatus.LINKED)))
    assert back.state.state == OnboardingState.CONFIGURED
    assert back.commands == ()


def test_deleted_partner_connection_moves_configured_back_and_a_new_one_forward() -> None:
    gone = build(*H_CONFIGURED, ev(CONNECTION_DELETED, 8, exp()))
    assert gone.state == OnboardingState.LINKED
    assert gone.last_error is not None
    again = transition(gone, ev(PARTNER_CONNECTION_CREATED, 9, exp(connection_id="exp-2")))
    assert again.state.state == OnboardingState.CONFIGURED
    assert again.state.last_error is None  # cleared as on reaching ready


def test_relink_to_another_connection_needs_its_own_read_and_adopts_the_configuration() -> None:
    relinked = build(
        *H_CONFIGURED,
        ev(CONNECTION_DELETED, 8, acc(ConnectionStatus.LINKED)),
        ev(CONNECTION_CREATED, 9, acc(connection_id=ACC2)),
        ev(CONNECTION_CONNECTED, 10, acc(ConnectionStatus.LINKED, connection_id=ACC2)),
    )
    assert relinked.state == OnboardingState.READY
    assert relinked.data_read_at is None
    step = transition(relinked, read(11, connection_id=ACC2))
    assert step.state.state == OnboardingState.CONFIGURED
    assert step.state.data_read_at == at(11)


def test_a_deleted_company_ignores_reads_and_configurations() -> None:
    deleted = build(*H_DELETED)
    for event in (read(6), observed(7, **CHOSEN)):
        assert transition(deleted, event) == Transition(deleted, (), IGNORED)


def test_a_state_stored_before_reads_and_configurations_still_loads() -> None:
    stored = build(*H_READY).to_dict()
    del stored["data_reads"], stored["configuration"]
    state = CompanyState.from_dict(stored)
    assert state == build(*H_READY)
    assert state.state == OnboardingState.READY

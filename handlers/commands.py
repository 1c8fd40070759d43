"""Commands a transition asks the driver to carry out once the new state is committed."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.state import CompanyState, OnboardingState

CREATE_PARTNER_EXPENSE_CONNECTION = "create_partner_expense_connection"
FETCH_EXPENSE_OPTIONS = "fetch_expense_options"
READ_EXPENSE_CONFIGURATION = "read_expense_configuration"


@dataclass(frozen=True)
class CreatePartnerExpenseConnection:
    """Create the company's partner expense connection (after confirming with Codat)."""

    company_id: str
    accounting_connection_id: str
    kind: str = CREATE_PARTNER_EXPENSE_CONNECTION


@dataclass(frozen=True)
class FetchExpenseOptions:
    """Fetch the choices for the configuration (mapping options, suppliers, customers) and
    keep a snapshot, so the expense app and `configure` need not ask Codat."""

    company_id: str
    accounting_connection_id: str
    kind: str = FETCH_EXPENSE_OPTIONS


@dataclass(frozen=True)
class ReadExpenseConfiguration:
    """Read the configuration back from Codat: one already set there is adopted, not asked for."""

    company_id: str
    accounting_connection_id: str
    kind: str = READ_EXPENSE_CONFIGURATION


Command = CreatePartnerExpenseConnection | FetchExpenseOptions | ReadExpenseConfiguration


def still_needed(state: CompanyState, command: Command) -> bool:
    """Whether a command emitted during a fold is still wanted by the state the fold ended in."""
    return command in needed_commands(state)


def needed_commands(state: CompanyState) -> list[Command]:
    """The commands a state calls for, whatever events led to it (used after a rebuild)."""
    accounting = state.accounting_connection
    if accounting is None:
        return []
    if state.state == OnboardingState.LINKED:
        return [CreatePartnerExpenseConnection(state.company_id, accounting.id)]
    if state.state == OnboardingState.AWAITING_CONFIGURATION:
        # The options first: the worker carries out a company's commands in order of opening.
        return [
            FetchExpenseOptions(state.company_id, accounting.id),
            ReadExpenseConfiguration(state.company_id, accounting.id),
        ]
    return []

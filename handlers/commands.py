"""Commands a transition asks the driver to carry out once the new state is committed."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.state import CompanyState, OnboardingState

CREATE_PARTNER_EXPENSE_CONNECTION = "create_partner_expense_connection"


@dataclass(frozen=True)
class CreatePartnerExpenseConnection:
    """Create the company's partner expense connection (after confirming with Codat)."""

    company_id: str
    accounting_connection_id: str
    kind: str = CREATE_PARTNER_EXPENSE_CONNECTION


Command = CreatePartnerExpenseConnection


def still_needed(state: CompanyState, command: Command) -> bool:
    """Whether a command emitted during a fold is still wanted by the state the fold ended in."""
    accounting = state.accounting_connection
    return (
        state.state == OnboardingState.LINKED
        and accounting is not None
        and accounting.id == command.accounting_connection_id
    )


def needed_commands(state: CompanyState) -> list[Command]:
    """The commands a state calls for, whatever events led to it (used after a rebuild)."""
    accounting = state.accounting_connection
    if state.state == OnboardingState.LINKED and accounting is not None:
        return [CreatePartnerExpenseConnection(state.company_id, accounting.id)]
    return []

"""Commands a transition asks the driver to carry out once the new state is committed."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.state import CompanyState, OnboardingState
from handlers.syncs import FAILED

CREATE_PARTNER_EXPENSE_CONNECTION = "create_partner_expense_connection"
FETCH_EXPENSE_OPTIONS = "fetch_expense_options"
READ_EXPENSE_CONFIGURATION = "read_expense_configuration"
FETCH_SYNC_TRANSACTIONS = "fetch_sync_transactions"


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


@dataclass(frozen=True)
class FetchSyncTransactions:
    """Fetch a failed sync's transactions from Codat: its webhook did not list them (a legacy
    body, or a current one without `transactions`), and the operator needs to know which failed
    and why."""

    company_id: str
    sync_id: str
    kind: str = FETCH_SYNC_TRANSACTIONS

    @property
    def accounting_connection_id(self) -> str:
        """The intent's subject, in the column intents keep it in: here the sync id."""
        return self.sync_id


Command = (
    CreatePartnerExpenseConnection
    | FetchExpenseOptions
    | ReadExpenseConfiguration
    | FetchSyncTransactions
)


def still_needed(state: CompanyState, command: Command) -> bool:
    """Whether a command emitted during a fold is still wanted by the state the fold ended in."""
    return command in needed_commands(state)


def needed_commands(state: CompanyState) -> list[Command]:
    """The commands a state calls for, whatever events led to it (used after a rebuild)."""
    return _onboarding_commands(state) + sync_commands(state)


def sync_commands(state: CompanyState) -> list[Command]:
    """The oldest failed sync kept whose transactions nobody listed yet: one at a time, as a
    company has one open intent of each kind; when its transactions arrive, the next one."""
    if state.deleted:
        return []
    unlisted = [r for r in state.syncs if r.outcome == FAILED and r.transactions is None]
    if not unlisted:
        return []
    oldest = min(unlisted, key=lambda r: (r.at, r.sync_id))
    return [FetchSyncTransactions(state.company_id, oldest.sync_id)]


def _onboarding_commands(state: CompanyState) -> list[Command]:
    accounting = state.accounting_connection
    if accounting is None:
        return []
    now = state.state  # (derived at each call: once here)
    if now == OnboardingState.LINKED:
        return [CreatePartnerExpenseConnection(state.company_id, accounting.id)]
    if now == OnboardingState.AWAITING_CONFIGURATION:
        # The options first: the worker carries out a company's commands in order of opening.
        return [
            FetchExpenseOptions(state.company_id, accounting.id),
            ReadExpenseConfiguration(state.company_id, accounting.id),
        ]
    return []

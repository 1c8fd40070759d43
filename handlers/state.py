"""The onboarding state of one company: a projection of its event log."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from handlers.copies import evolve
from handlers.events import Connection, ConnectionStatus
from handlers.syncs import FAILED, SUCCESSFUL, SyncRecord


class OnboardingState(StrEnum):
    """Where a company is in onboarding (the README's state table), in funnel order."""

    CREATED = "created"
    PENDING_AUTH = "pending_auth"
    LINKED = "linked"
    READY = "ready"
    AWAITING_CONFIGURATION = "awaiting_configuration"
    CONFIGURED = "configured"
    DISCONNECTED = "disconnected"
    DELETED = "deleted"


STATES: tuple[str, ...] = tuple(OnboardingState)
# Both connections exist: the states the first part of onboarding ends in.
CONNECTED_STATES = frozenset(
    {
        OnboardingState.READY,
        OnboardingState.AWAITING_CONFIGURATION,
        OnboardingState.CONFIGURED,
    }
)


@dataclass(frozen=True)
class ExpensesConfiguration:
    """The company's expense sync defaults as last read back from Codat, and when.

    Ids are Codat's (`bankAccount.id`, `supplier.id`, `customer.id`); None where Codat had none.
    """

    bank_account: str | None
    supplier: str | None
    customer: str | None
    checked_at: str

    @property
    def is_set(self) -> bool:
        """Codat syncs expenses only with all three: its POST requires them together."""
        return bool(self.bank_account and self.supplier and self.customer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bank_account": self.bank_account,
            "supplier": self.supplier,
            "customer": self.customer,
            "checked_at": self.checked_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ExpensesConfiguration | None:
        if not data:
            return None
        return cls(
            bank_account=data.get("bank_account"),
            supplier=data.get("supplier"),
            customer=data.get("customer"),
            checked_at=data["checked_at"],
        )


@dataclass(frozen=True)
class CompanyState:
    """Everything the processor believes about one company."""

    company_id: str
    name: str | None = None
    deleted: bool = False
    accounting_connection: Connection | None = None
    expense_connection: Connection | None = None
    # Newest generatedDate applied, per connection id (and "company" for company events).
    watermarks: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: str | None = None
    # generatedDate of the first completed data read, per connection id (read.completed[.initial]).
    data_reads: dict[str, str] = field(default_factory=dict)
    configuration: ExpensesConfiguration | None = None
    # The newest expense syncs (handlers.syncs.KEPT_SYNCS at most, newest first), and the
    # newest success and failure among the older ones, no longer kept.
    syncs: tuple[SyncRecord, ...] = ()
    earlier_successful_at: str | None = None
    earlier_failed_at: str | None = None

    @property
    def state(self) -> str:
        """The onboarding state, derived from the facts so it can never disagree with them."""
        if self.deleted:
            return OnboardingState.DELETED
        accounting = self.accounting_connection
        if accounting is None:
            return OnboardingState.CREATED
        if accounting.status == ConnectionStatus.PENDING_AUTH:
            return OnboardingState.PENDING_AUTH
        if accounting.status in (ConnectionStatus.UNLINKED, ConnectionStatus.DEAUTHORIZED):
            return OnboardingState.DISCONNECTED
        if accounting.status == ConnectionStatus.LINKED:
            if self.expense_connection is None:
                return OnboardingState.LINKED
            if self.data_read_at is None:
                return OnboardingState.READY
            if self.configuration is not None and self.configuration.is_set:
                return OnboardingState.CONFIGURED
            return OnboardingState.AWAITING_CONFIGURATION
        return OnboardingState.PENDING_AUTH

    @property
    def data_read_at(self) -> str | None:
        """When Codat first finished reading the current accounting connection's data."""
        accounting = self.accounting_connection
        return self.data_reads.get(accounting.id) if accounting is not None else None

    @property
    def latest_sync(self) -> SyncRecord | None:
        return self.syncs[0] if self.syncs else None

    @property
    def last_successful_at(self) -> str | None:
        return _newest(self.syncs, SUCCESSFUL, self.earlier_successful_at)

    @property
    def last_failed_at(self) -> str | None:
        return _newest(self.syncs, FAILED, self.earlier_failed_at)

    def with_watermark(self, key: str, generated_date: str) -> CompanyState:
        return evolve(self, watermarks=self.marked((key,), generated_date))

    def marked(self, keys: tuple[str, ...], generated_date: str) -> dict[str, str]:
        """The watermarks with each of these keys raised to `generated_date` (never lowered)."""
        marks = dict(self.watermarks)
        for key in keys:
            if generated_date > marks.get(key, ""):
                marks[key] = generated_date
        return marks

    def to_dict(self) -> dict[str, Any]:
        return {
            "company_id": self.company_id,
            "name": self.name,
            "deleted": self.deleted,
            "accounting_connection": _connection_dict(self.accounting_connection),
            "expense_connection": _connection_dict(self.expense_connection),
            "watermarks": dict(sorted(self.watermarks.items())),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "data_reads": dict(sorted(self.data_reads.items())),
            "configuration": self.configuration.to_dict() if self.configuration else None,
            "syncs": [record.to_dict() for record in self.syncs],
            "earlier_successful_at": self.earlier_successful_at,
            "earlier_failed_at": self.earlier_failed_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompanyState:
        return cls(
            company_id=data["company_id"],
            name=data.get("name"),
            deleted=bool(data.get("deleted")),
            accounting_connection=_connection(data.get("accounting_connection")),
            expense_connection=_connection(data.get("expense_connection")),
            watermarks=dict(data.get("watermarks") or {}),
            last_error=data.get("last_error"),
            last_error_at=data.get("last_error_at"),
            # States stored before issue 13 have neither: nothing read, nothing observed yet.
            data_reads=dict(data.get("data_reads") or {}),
            configuration=ExpensesConfiguration.from_dict(data.get("configuration")),
            # States stored before issue 14: no sync reported yet.
            syncs=tuple(SyncRecord.from_dict(r) for r in data.get("syncs") or ()),
            earlier_successful_at=data.get("earlier_successful_at"),
            earlier_failed_at=data.get("earlier_failed_at"),
        )


def _newest(records: tuple[SyncRecord, ...], outcome: str, earlier: str | None) -> str | None:
    dates = [r.at for r in records if r.outcome == outcome] + ([earlier] if earlier else [])
    return max(dates, default=None)


def _connection_dict(connection: Connection | None) -> dict[str, Any] | None:
    if connection is None:
        return None
    return {
        "id": connection.id,
        "status": connection.status,
        "platform_key": connection.platform_key,
        "platform_name": connection.platform_name,
        "source_type": connection.source_type,
    }


def _connection(data: dict[str, Any] | None) -> Connection | None:
    if not data:
        return None
    return Connection(
        id=data["id"],
        status=data["status"],
        platform_key=data.get("platform_key"),
        platform_name=data.get("platform_name"),
        source_type=data.get("source_type"),
    )

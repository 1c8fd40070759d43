"""The onboarding state of one company: a projection of its event log."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from handlers.events import Connection, ConnectionStatus


class OnboardingState(StrEnum):
    """Where a company is in onboarding (the README's state table), in funnel order."""

    CREATED = "created"
    PENDING_AUTH = "pending_auth"
    LINKED = "linked"
    READY = "ready"
    DISCONNECTED = "disconnected"
    DELETED = "deleted"


STATES: tuple[str, ...] = tuple(OnboardingState)


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
            if self.expense_connection is not None:
                return OnboardingState.READY
            return OnboardingState.LINKED
        return OnboardingState.PENDING_AUTH

    def with_watermark(self, key: str, generated_date: str) -> CompanyState:
        marks = dict(self.watermarks)
        if generated_date > marks.get(key, ""):
            marks[key] = generated_date
        return replace(self, watermarks=marks)

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
        )


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

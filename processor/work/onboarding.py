"""The seed page's own steps, from the command line: onboard a company, unlink its connection.

Each Codat answer is recorded in the store as an event of its own (`source: onboard` or
`command`) and folded at once, so the status document shows the company as Codat left it.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from handlers.events import ConnectionStatus, SourceType
from handlers.transitions import COMPANY_CREATED, CONNECTION_CREATED, CONNECTION_DISCONNECTED
from processor import clock
from processor.codat.client import CodatClient, CodatError
from processor.codat.names import kept_name
from processor.work.folding import fold_pending, load_state
from processor.work.synthetic import about_connection, synthetic_event
from store import Store


class OnboardingError(Exception):
    """A step that could not be done; the message says what to do next."""

    def __init__(
        self,
        message: str,
        *,
        company_id: str | None = None,
        existing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.company_id = company_id
        self.existing = existing

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"error": str(self), "companyId": self.company_id}
        if self.existing is not None:
            answer["existing"] = self.existing
        return answer


@dataclass(frozen=True)
class Onboarded:
    """The result of `onboard`: the company, its accounting connection and the Link URL."""

    company_id: str
    company_name: str
    connection_id: str
    platform_key: str
    link_url: str
    state: str

    def to_json(self) -> dict[str, Any]:
        return {
            "companyId": self.company_id,
            "name": self.company_name,
            "connectionId": self.connection_id,
            "platformKey": self.platform_key,
            "linkUrl": self.link_url,
            "state": self.state,
        }


async def onboard(
    store: Store,
    codat: CodatClient,
    *,
    name: str,
    platform_key: str,
    company_id: str | None = None,
    force: bool = False,
) -> Onboarded:
    """Create the company (unless `company_id` continues an earlier run) and its connection.

    Unless `force`, refuses a name already in the store and a company that already has a
    PendingAuth or Linked accounting connection: a second one is rarely what was meant.
    """
    if company_id is None:
        # The stored names are Codat's, stripped of what it does not allow: compared as such.
        kept = kept_name(name)
        named = store.companies_named(kept)
        if named and not force:
            as_kept = "" if kept == name else f" (as Codat keeps it: {kept!r})"
            raise OnboardingError(
                f"a company named {name!r}{as_kept} is already in the store ({', '.join(named)}); "
                "run again with --force to create another one, or with --company ID to continue",
                existing={"companyIds": named},
            )
        try:
            company = await codat.create_company(name, idempotency_key=str(uuid.uuid4()))
        except CodatError as error:
            raise OnboardingError(f"Codat did not create the company: {error}") from None
        company_id = str(company["id"])
        _record(store, company_id, COMPANY_CREATED, company, "company")
    else:
        try:
            company = await codat.get_company(company_id)
        except CodatError as error:
            raise OnboardingError(f"cannot continue with company {company_id}: {error}") from None
        if not force:
            await _refuse_second_connection(codat, company_id)
        _record(store, company_id, COMPANY_CREATED, company, "company")
    try:
        connection = await codat.create_connection(
            company_id, platform_key, idempotency_key=str(uuid.uuid4())
        )
    except CodatError as error:
        raise OnboardingError(
            f"company {company_id} was created, but its accounting connection was not: {error}. "
            f"Run again with --company {company_id} to continue without creating another company.",
            company_id=company_id,
        ) from None
    _record(store, company_id, CONNECTION_CREATED, connection, "connection")
    state = load_state(store, company_id)
    return Onboarded(
        company_id=company_id,
        company_name=str(company.get("name") or name),
        connection_id=str(connection["id"]),
        platform_key=platform_key,
        link_url=str(connection.get("linkUrl") or ""),
        state=state.state if state else "created",
    )


async def _refuse_second_connection(codat: CodatClient, company_id: str) -> None:
    try:
        connections = await codat.list_connections(company_id)
    except CodatError as error:
        raise OnboardingError(
            f"cannot list the connections of company {company_id}: {error}", company_id=company_id
        ) from None
    for connection in connections:
        if connection.get("sourceType") not in (SourceType.ACCOUNTING, None):
            continue
        if connection.get("status") in (ConnectionStatus.PENDING_AUTH, ConnectionStatus.LINKED):
            existing = {
                "connectionId": connection.get("id"),
                "platformKey": connection.get("integrationKey"),
                "status": connection.get("status"),
                "linkUrl": connection.get("linkUrl"),
            }
            raise OnboardingError(
                f"company {company_id} already has a {connection.get('status')} accounting "
                f"connection {connection.get('id')} ({connection.get('integrationKey')}), "
                f"Link URL: {connection.get('linkUrl')}; run again with --force to create a "
                "second one",
                company_id=company_id,
                existing=existing,
            )


async def unlink(store: Store, codat: CodatClient, company_id: str) -> dict[str, Any]:
    """PATCH the company's Linked accounting connection to Unlinked, and record it."""
    state = load_state(store, company_id)
    if state is None:
        raise OnboardingError(f"no company {company_id!r} in the store")
    accounting = state.accounting_connection
    if accounting is None or accounting.status != ConnectionStatus.LINKED:
        found = f"it is {accounting.status}" if accounting else "it has no accounting connection"
        raise OnboardingError(
            f"company {company_id} has no Linked accounting connection to unlink: {found} "
            f"(state {state.state})"
        )
    try:
        connection = await codat.unlink_connection(
            company_id, accounting.id, idempotency_key=str(uuid.uuid4())
        )
    except CodatError as error:
        raise OnboardingError(f"Codat refused to unlink {accounting.id}: {error}") from None
    _record(store, company_id, CONNECTION_DISCONNECTED, connection, "unlink")
    return connection


def _record(
    store: Store, company_id: str, event_type: str, answer: dict[str, Any], what: str
) -> None:
    generated = None
    if event_type == COMPANY_CREATED and isinstance(answer.get("created"), str):
        with contextlib.suppress(clock.InvalidDate):
            generated = clock.normalize(answer["created"])
    fields: dict[str, Any] = {"company_name": answer.get("name")}
    if event_type != COMPANY_CREATED:
        fields = about_connection(answer)
    identifier = answer.get("id") or uuid.uuid4()
    event = synthetic_event(
        message_id=f"{what}:{identifier}:{uuid.uuid4().hex[:8]}",
        event_type=event_type,
        source="onboard" if what in ("company", "connection") else "command",
        company_id=company_id,
        fields=fields,
        body=answer,
        generated_date=generated,
    )
    now = clock.now()
    with store.transaction():
        store.append_events([event])
        fold_pending(store, company_id, now)

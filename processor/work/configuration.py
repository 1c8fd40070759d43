"""Sync for Expenses' configuration: the choices Codat offers, and the defaults chosen.

Codat syncs an expense only with a bank account, a supplier and a customer, taken from the
transaction or from the company's defaults (`POST .../sync/expenses/config`, all three at once).
The choices come from `mappingOptions` and the company's suppliers and customers, once Codat has
read its data. What Codat answers about the defaults is recorded as an event
(`expenses.configuration.observed`) that the handlers fold like any other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from handlers.state import OnboardingState
from handlers.transitions import CONFIGURATION_FIELDS, CONFIGURATION_OBSERVED
from processor import clock
from processor.codat.client import CodatClient, CodatError
from processor.work.folding import fold_pending, load_state
from processor.work.synthetic import synthetic_event
from store import NewEvent, OptionsSnapshot, Store

# The command-line flag of each configuration field, for messages.
FLAGS = {"bankAccount": "--bank-account", "supplier": "--supplier", "customer": "--customer"}
CONFIGURABLE = frozenset({OnboardingState.AWAITING_CONFIGURATION, OnboardingState.CONFIGURED})


class ConfigurationRefused(Exception):
    """The configuration cannot be set now (the data is not read, Codat refused): exit 1."""


class InvalidChoice(Exception):
    """An id that is not among the company's stored choices (or an unknown company): exit 2."""


@dataclass(frozen=True)
class Configured:
    """What `configure` left: Codat's configuration as read back, and the company's state."""

    company_id: str
    state: str
    configuration: dict[str, str]
    checked_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "companyId": self.company_id,
            "state": self.state,
            "configuration": {name: self.configuration.get(name) for name in CONFIGURATION_FIELDS},
            "checkedAt": self.checked_at,
        }


# -- reading from Codat -------------------------------------------------------------------------


async def fetch_options(codat: CodatClient, company_id: str) -> dict[str, Any]:
    """The company's choices now: mapping options, and every supplier and customer."""
    mapping = await codat.get_mapping_options(company_id)
    suppliers = await codat.list_suppliers(company_id)
    customers = await codat.list_customers(company_id)
    return {
        "expenseProvider": mapping.get("expenseProvider"),
        "accounts": _with_ids(mapping.get("accounts")),
        "trackingCategories": _with_ids(mapping.get("trackingCategories")),
        "taxRates": _with_ids(mapping.get("taxRates")),
        "suppliers": [_contact(s, "supplierName") for s in _with_ids(suppliers)],
        "customers": [_contact(c, "customerName") for c in _with_ids(customers)],
    }


async def observe_configuration(codat: CodatClient, company_id: str) -> dict[str, str]:
    """The ids Codat holds as the company's defaults; a 404 means none is set."""
    try:
        answer = await codat.get_expenses_config(company_id)
    except CodatError as error:
        if error.status != 404:
            raise
        return {}
    return configuration_ids(answer)


def configuration_ids(answer: dict[str, Any]) -> dict[str, str]:
    """`{"bankAccount": {"id"}, ...}` as `{"bankAccount": id, ...}`; objects without an id,
    or with an empty one, are not set and left out."""
    found = {}
    for name in CONFIGURATION_FIELDS:
        item = answer.get(name)
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            found[name] = item["id"]
    return found


def observed_event(company_id: str, ids: dict[str, str], source: str, note: str) -> NewEvent:
    """Codat's answer about the configuration, as an event for the log."""
    return synthetic_event(
        message_id=f"{source}:configuration:{company_id}:{uuid.uuid4().hex}",
        event_type=CONFIGURATION_OBSERVED,
        source=source,
        company_id=company_id,
        fields={"configuration": ids, "note": note},
        body={"eventType": CONFIGURATION_OBSERVED, "codat": ids},
    )


# -- the choices ----------------------------------------------------------------------------------


def choices(snapshot: OptionsSnapshot) -> dict[str, list[dict[str, Any]]]:
    """The valid ids per configuration field: bank accounts, suppliers, customers."""
    data = snapshot.data
    return {
        "bankAccount": [a for a in data.get("accounts") or [] if a.get("isBankAccount") is True],
        "supplier": list(data.get("suppliers") or []),
        "customer": list(data.get("customers") or []),
    }


def check_choices(snapshot: OptionsSnapshot, chosen: dict[str, str]) -> None:
    """Raise InvalidChoice naming every id not among the stored choices, and the valid ones."""
    valid = choices(snapshot)
    problems = []
    for name, value in chosen.items():
        known = valid[name]
        if any(item.get("id") == value for item in known):
            continue
        listed = ", ".join(f"{item['id']} ({item.get('name')})" for item in known) or "none"
        what = {"bankAccount": "bank accounts"}.get(name, f"{name}s")
        problems.append(
            f"{FLAGS[name]}: expected the id of one of the company's {what} (choices fetched "
            f"{snapshot.fetched_at}), found {value!r}; valid: {listed}"
        )
    if problems:
        raise InvalidChoice("\n".join(problems))


# -- configure ------------------------------------------------------------------------------------


async def configure(
    store: Store, codat: CodatClient, company_id: str, chosen: dict[str, str]
) -> Configured:
    """Check the ids against the stored choices, POST them, read them back, record the answer.

    Nothing is sent to Codat unless every id is among the company's stored choices.
    """
    state = load_state(store, company_id)
    if state is None:
        raise InvalidChoice(f"no company {company_id!r} in the store; expected a stored company id")
    if state.state not in CONFIGURABLE or state.data_read_at is None:
        raise ConfigurationRefused(
            f"company {company_id} is {state.state}: expected awaiting_configuration or "
            "configured (its accounting data read by Codat, both connections linked); the "
            "choices exist only once Codat has read the data"
        )
    snapshot = store.options(company_id)
    if snapshot is None:
        raise ConfigurationRefused(
            f"no choices stored for company {company_id}; run `codat-expenses options "
            f"{company_id} --refresh` to fetch them first"
        )
    check_choices(snapshot, chosen)
    try:
        posted = await codat.set_expenses_config(
            company_id,
            bank_account=chosen["bankAccount"],
            supplier=chosen["supplier"],
            customer=chosen["customer"],
            idempotency_key=str(uuid.uuid4()),
        )
    except CodatError as error:
        raise ConfigurationRefused(f"Codat refused the configuration: {error}") from None
    try:
        ids, note = await observe_configuration(codat, company_id), "configured, read back"
    except CodatError as error:
        # Set, but not read back: Codat's answer to the POST is the best we know.
        ids, note = configuration_ids(posted), f"configured; reading it back failed: {error}"
    event = observed_event(company_id, ids, "command", note)
    with store.transaction():
        store.append_events([event])
        fold_pending(store, company_id, clock.now())
    after = load_state(store, company_id)
    return Configured(
        company_id=company_id,
        state=after.state if after else state.state,
        configuration=ids,
        checked_at=event.generated_date,
    )


def _with_ids(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _contact(contact: dict[str, Any], name_field: str) -> dict[str, Any]:
    # Only what a choice needs: Codat's contacts carry addresses, phones and more.
    return {
        "id": contact["id"],
        "name": contact.get(name_field) or contact.get("contactName"),
        "status": contact.get("status"),
        "defaultCurrency": contact.get("defaultCurrency"),
    }

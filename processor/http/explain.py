"""One sentence saying why a company is where it is, read from its status document.

It reads the document of `documents.company_document`, so the dashboard (and, later, `status`)
says nothing the query API does not also answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from processor import clock

LINK_URL = "https://link-api.codat.io/companies/{company}/connections/{connection}/start"
PARTNER_COMMAND = "create_partner_expense_connection"
DOING = {
    PARTNER_COMMAND: "Creating the partner expense connection",
    "fetch_expense_options": "Fetching the choices for the expense configuration",
    "read_expense_configuration": "Reading the expense configuration back from Codat",
}


def why(document: dict[str, Any], now: datetime) -> str:
    """The sentence for this document, as of `now` (an aware UTC datetime)."""
    company = document["id"]
    since = _since(document.get("updatedAt"), now)
    if document["failed"]:
        command = document["failed"][0]
        return (
            f"{_doing(command['command'])} failed: {command['lastError'] or 'no error recorded'}; "
            f"run `codat-expenses replay --company {company}` after fixing it."
        )
    if document["pending"]:
        command = document["pending"][0]
        retry = (
            f"attempt {command['attempts']} failed ({command['lastError']}), "
            if (command["attempts"] and command["lastError"])
            else ""
        )
        return f"{_doing(command['command'])}: {retry}next attempt at {command['nextAttemptAt']}."
    state = document["state"]
    accounting = document["accountingConnection"] or {}
    platform = accounting.get("platformName") or accounting.get("platformKey") or "the platform"
    if state is None:
        return f"{document['pendingEvents']} events received, not yet folded into a state."
    if state == "created":
        return (
            f"No accounting connection yet{since}: run `codat-expenses onboard --company "
            f"{company} --platform KEY` to create one."
        )
    if state == "pending_auth":
        link = LINK_URL.format(company=company, connection=accounting.get("id", ""))
        error = document["lastError"]
        if error:
            return f"The customer's authorization of {platform} failed: {error['message']}."
        return f"Waiting for the customer to authorize {platform}{since} (Link URL: {link})."
    if state == "linked":
        return f"{platform} is linked{since}; the partner expense connection is not confirmed yet."
    if state == "ready":
        return f"Waiting for Codat's first read of the {platform} data{since}."
    if state == "awaiting_configuration":
        return (
            "Waiting for the customer to choose a bank account, a supplier and a customer"
            f"{_since(document.get('dataReadAt'), now, 'the data was read')}."
        )
    if state == "configured":
        checked = (document.get("configuration") or {}).get("checkedAt")
        configured = f"Configured on {_day(checked) if checked else 'an unknown date'}"
        return _sync_sentence(document.get("sync") or {}, configured, now)
    if state == "disconnected":
        status = accounting.get("status") or "not linked"
        return (
            f"The accounting connection to {platform} is {status}{since}: the customer must "
            "authorize it again through Link."
        )
    if state == "deleted":
        return f"Deleted in Codat{since}; nothing more will happen."
    return f"In {state}{since}."


def row_why(document: dict[str, Any], now: datetime) -> str:
    """`why` of a list's row: a summary, whose commands are not read for a list (none counted).

    The same sentence as the company's page whenever no command is pending or failed."""
    return why({"failed": [], "pending": [], "pendingEvents": 0, **document}, now)


def sync_why(document: dict[str, Any], now: datetime) -> str:
    """The sentence about the company's expense syncs alone, whatever its state (the
    dashboard's list of failing and silent syncs)."""
    sync = document.get("sync") or {}
    checked = (document.get("configuration") or {}).get("checkedAt")
    configured = f"Configured on {_day(checked) if checked else 'an unknown date'}"
    return _sync_sentence(sync, configured, now)


def _sync_sentence(sync: dict[str, Any], configured: str, now: datetime) -> str:
    """A configured company's expense syncs: a failure with its reason, a silence, or fine."""
    latest = sync.get("latest")
    if sync.get("health") == "failing" and latest:
        return _failed_sync(latest, sync)
    if latest is None:
        if sync.get("health") == "silent":
            return f"{configured}; no expense sync has been reported since."
        return f"{configured}; no expense sync reported yet."
    when = f"{_day(latest['at'])} ({ago(clock.parse(latest['at']), now)})"
    if sync.get("health") == "silent":
        return f"{configured}; no expense sync reported since {when}."
    return f"{configured}; the last expense sync ({when}) succeeded."


def _failed_sync(latest: dict[str, Any], sync: dict[str, Any]) -> str:
    failing = sync.get("failingTransactions") or []
    if latest.get("failingCount") is not None:
        how = f" for {latest['failingCount']} of {latest['transactionCount']} transactions"
    elif latest.get("failureStage"):
        how = f" at stage {latest['failureStage']!r} (Codat did not list its transactions)"
    else:
        how = " (Codat did not list its transactions)"
    message = next((t["errorMessage"] for t in failing if t.get("errorMessage")), None)
    message = message or latest.get("error")
    reason = f": {message!r}" if message else ""
    before = {
        "successful": "; the one before succeeded",
        "failed": "; the one before failed too",
    }.get(sync.get("previousOutcome") or "", "")
    return f"The last expense sync ({_day(latest['at'])}) failed{how}{reason}{before}."


def _day(moment: str) -> str:
    return moment[:16].replace("T", " ")


def _doing(command: str) -> str:
    return DOING.get(command, f"The command {command}")


def _since(moment: str | None, now: datetime, what: str = "") -> str:
    if not moment:
        return ""
    lead = f"; {what} at" if what else " since"
    return f"{lead} {moment[:16].replace('T', ' ')} ({ago(clock.parse(moment), now)})"


def ago(moment: datetime, now: datetime) -> str:
    """How long before `now`, in the largest whole unit: '3 days ago', 'just now'."""
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"

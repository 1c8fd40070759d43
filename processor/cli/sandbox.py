"""`codat-expenses sandbox` and `secret`: the local stand-in for Codat and a signing secret.

`sandbox` alone runs the stand-in; `sandbox sync` and `sandbox rate-limit` script a running one
through its admin routes (an expense sync and its webhook, Codat's rate-limit notices).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import click
import httpx

from processor import config
from processor.cli.common import CliError, Refused, example, host_option, json_option

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
SANDBOX_URL = "http://127.0.0.1:8100"
# The webhook a scripted sync sends (the stand-in checks these, and the transaction statuses).
WEBHOOK_KINDS = ("current", "legacy", "none")
FAILING_STATUSES = ("PushError", "ValidationError")  # as the status endpoints name them
ADMIN_TIMEOUT = 10.0


@click.group(
    invoke_without_command=True,
    epilog=example("codat-expenses sandbox --webhook-url http://127.0.0.1:8000/webhooks/codat"),
)
@click.pass_context
@host_option
@click.option("--port", type=int, default=8100, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    envvar="CODAT_API_KEY",
    show_envvar=True,
    help="Key clients must send (Basic auth), as serve's CODAT_API_KEY (required to run it).",
)
@click.option(
    "--webhook-url",
    default=None,
    help="Where to deliver signed webhooks, e.g. http://127.0.0.1:8000/webhooks/codat.",
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    envvar="CODAT_WEBHOOK_SECRET",
    show_envvar=True,
    help="whsec_ signing secret(s), as serve's CODAT_WEBHOOK_SECRET (`codat-expenses secret`).",
)
@click.option(
    "--data-read-delay",
    type=click.FloatRange(min=0),
    default=None,
    help="Send read.completed.initial this many seconds after an accounting connection is "
    "first Linked (off by default: a company then stays ready until POST .../read).",
)
def sandbox(
    ctx: click.Context,
    host: str,
    port: int,
    api_key: str | None,
    webhook_url: str | None,
    secrets: tuple[str, ...],
    data_read_delay: float | None,
) -> None:
    """Run the local stand-in for Codat (for trials and fault drills; loopback only).

    Codat's onboarding API (companies, connections, partner expense connection, the expense
    configuration and its choices, the expense sync status endpoints) with Basic auth and
    Idempotency-Key, and Svix-signed webhooks to --webhook-url with retries. Every delivery
    attempt is logged on stderr with its answer.

    \b
    Admin routes (no auth; JSON bodies):
      POST   /_sandbox/companies/{companyId}/connections/{connectionId}/authorize
             the customer completes Link (PendingAuth, Unlinked or Deauthorized -> Linked)
      POST   /_sandbox/companies/{companyId}/connections/{connectionId}/fail
             Link fails: {"errorMessage": "..."} (optional)
      POST   /_sandbox/companies/{companyId}/connections/{connectionId}/deauthorize
             Linked -> Deauthorized
      POST   /_sandbox/companies/{companyId}/connections/{connectionId}/read
             Codat reads the accounting data now: sends read.completed.initial
      DELETE /_sandbox/companies/{companyId}/connections/{connectionId}
             delete the connection
      DELETE /_sandbox/companies/{companyId}
             delete the company
      POST   /_sandbox/companies/{companyId}/legacy
             send this company's webhooks in the old rules format: {"legacy": true}
      POST   /_sandbox/companies/{companyId}/syncs
             Codat syncs expenses: {"transactions": [{"id", "status", "message"}],
             "outcome", "webhook": current|legacy|none, "listTransactions", "syncUtc"}
      POST   /_sandbox/rateLimit
             send client.rateLimit.reached or reset: {"event": "reached"|"reset",
             "quotaRemaining", "expiryDate"}
      GET    /_sandbox/state
             companies, connections, webhook bodies, deliveries, API requests, faults
      POST   /_sandbox/config
             {"webhookUrl", "secrets", "autoWebhooks", "retryDelays", "headerPrefix",
             "dataReadDelay"}
      POST   /_sandbox/faults
             add fault rules (a JSON list; see the README)
      DELETE /_sandbox/faults
             clear the fault rules
      POST   /_sandbox/webhooks/send
             send a webhook: {"body": {...}} or {"raw": "..."}, "messageId", "repeat"

    `sandbox sync` and `sandbox rate-limit` call the syncs and rateLimit routes of a running
    stand-in (see their --help).
    """
    if ctx.invoked_subcommand is not None:
        return  # a subcommand scripting a running stand-in: nothing to start
    if api_key is None:
        param = next(p for p in ctx.command.params if p.name == "api_key")
        raise click.MissingParameter(ctx=ctx, param=param)
    # Imported here: the stand-in brings Starlette, uvicorn and svix, slow to import.
    from processor.sandbox import serve_sandbox

    _check_loopback(host)
    checked = _checked_secrets(secrets)
    if webhook_url is not None:
        _check_webhook_url(webhook_url, checked)
    serve_sandbox(host, port, api_key, webhook_url, checked, data_read_delay)


sandbox_url_option = click.option(
    "--url",
    "sandbox_url",
    envvar="CODAT_BASE_URL",
    show_envvar=True,
    default=SANDBOX_URL,
    show_default=True,
    help="The running stand-in (on loopback), as serve's CODAT_BASE_URL in a trial.",
)


@sandbox.command(
    name="sync",
    epilog=example(
        "codat-expenses sandbox sync $COMPANY --outcome failed --transaction Completed "
        "--transaction 'PushError:Supplier is archived in Xero'"
    ),
)
@click.argument("company_id")
@click.option(
    "--outcome",
    type=click.Choice(["successful", "failed"]),
    default=None,
    help="The sync's outcome (default: failed if a transaction is PushError, Failed or "
    "ValidationError, successful otherwise).",
)
@click.option(
    "--transaction",
    "transactions",
    multiple=True,
    metavar="STATUS[:MESSAGE]",
    help="One transaction of the sync (repeat for more): Completed, Pending, Unknown, PushError, "
    "Failed or ValidationError, then Codat's message, e.g. 'PushError:Supplier is archived'.",
)
@click.option(
    "--webhook",
    type=click.Choice(WEBHOOK_KINDS),
    default=None,
    help="What Codat sends: current (expenses.sync.*), legacy (Sync Completed/Failed) or none "
    "(a missed webhook). Default: the company's format.",
)
@click.option(
    "--list-transactions/--no-list-transactions",
    default=True,
    show_default=True,
    help="Whether the current webhook lists the transactions (without them, serve fetches "
    "them from .../syncs/{syncId}/transactions).",
)
@click.option("--sync-id", default=None, help="The sync's id (default: a new UUID).")
@click.option(
    "--at", "sync_utc", default=None, help="When it ran, e.g. 2026-12-01T10:02:00Z (default: now)."
)
@click.option(
    "--error-message", default=None, help="The sync's error (default: the first message)."
)
@click.option(
    "--failure-stage", default=None, help="A legacy Sync Failed body's stage (default Pushing)."
)
@sandbox_url_option
@json_option
def sync(
    company_id: str,
    outcome: str | None,
    transactions: tuple[str, ...],
    webhook: str | None,
    list_transactions: bool,
    sync_id: str | None,
    sync_utc: str | None,
    error_message: str | None,
    failure_stage: str | None,
    sandbox_url: str,
    as_json: bool,
) -> None:
    """Script an expense sync of COMPANY_ID on a running stand-in, and send its webhook.

    The stand-in records the sync (its status endpoints answer with it from then on) and sends
    the webhook to its --webhook-url, as Codat would after a sync.
    """
    body: dict[str, Any] = {
        "transactions": [_transaction(text) for text in transactions],
        "listTransactions": list_transactions,
    }
    optional = {
        "outcome": outcome,
        "webhook": webhook,
        "syncId": sync_id,
        "syncUtc": sync_utc,
        "errorMessage": error_message,
        "failureStage": failure_stage,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    answer = _admin(sandbox_url, f"/_sandbox/companies/{quote(company_id, safe='')}/syncs", body)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    done, listed = answer["sync"], answer["transactions"]
    failing = sum(1 for t in listed if t.get("status") in FAILING_STATUSES)
    sent = answer.get("webhook")
    said = "no webhook" if sent is None else str(sent.get("eventType") or sent.get("RuleType"))
    click.echo(
        f"sync {done['syncId']} of company {company_id}: {done['syncStatus']} at "
        f"{done['syncUtc']}, {failing} of {len(listed)} transactions failing; {said}"
    )


def _transaction(text: str) -> dict[str, str]:
    status, _, message = text.partition(":")
    if not status.strip():
        raise CliError(
            "--transaction: expected STATUS[:MESSAGE] such as 'PushError:Supplier is archived', "
            f"found {text!r}"
        )
    found = {"status": status.strip()}
    if message.strip():
        found["message"] = message.strip()
    return found


@sandbox.command(
    name="rate-limit", epilog=example("codat-expenses sandbox rate-limit reached --remaining 0")
)
@click.argument("event", type=click.Choice(["reached", "reset"]))
@click.option(
    "--remaining",
    "quota_remaining",
    type=click.IntRange(min=0),
    default=None,
    help="Calls left of the daily quota (default: 0 when reached, the whole quota when reset).",
)
@click.option(
    "--expiry",
    "expiry_date",
    default=None,
    help="When the quota resets, e.g. 2026-12-08T00:00:00Z (default: the next midnight UTC).",
)
@sandbox_url_option
@json_option
def rate_limit(
    event: str,
    quota_remaining: int | None,
    expiry_date: str | None,
    sandbox_url: str,
    as_json: bool,
) -> None:
    """Make a running stand-in send client.rateLimit.reached or client.rateLimit.reset.

    serve then pauses (or resumes) its non-urgent Codat calls: reconciliation, option refreshes
    and sync look-ups.
    """
    body: dict[str, Any] = {"event": event}
    if quota_remaining is not None:
        body["quotaRemaining"] = quota_remaining
    if expiry_date is not None:
        body["expiryDate"] = expiry_date
    sent = _admin(sandbox_url, "/_sandbox/rateLimit", body)
    if as_json:
        click.echo(json.dumps(sent, indent=2))
        return
    payload = sent.get("payload") or {}
    click.echo(
        f"sent {sent.get('eventType')}: {payload.get('quotaRemaining')} of "
        f"{payload.get('dailyQuota')} daily calls left, the quota resets at "
        f"{payload.get('expiryDate')}"
    )


def _admin(sandbox_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST `body` to an admin route of the stand-in at `sandbox_url`; its JSON answer."""
    base = sandbox_url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise CliError(
            "--url: expected the stand-in on loopback, such as http://127.0.0.1:8100 (its admin "
            f"routes exist nowhere else), found {sandbox_url!r}"
        )
    try:
        answer = httpx.post(base + path, json=body, timeout=ADMIN_TIMEOUT)
    except httpx.HTTPError as error:
        raise Refused(
            f"expected the stand-in (`codat-expenses sandbox`) to answer at {base}, found "
            f"{type(error).__name__}: {error}"
        ) from None
    try:
        found = answer.json()
    except ValueError:
        found = None
    if answer.status_code != 200 or not isinstance(found, dict):
        said = found.get("error") if isinstance(found, dict) else answer.text[:200]
        raise Refused(
            f"the stand-in at {base} answered {answer.status_code} to POST {path}: {said}"
        )
    return found


def _check_loopback(host: str) -> None:
    if host not in LOOPBACK_HOSTS:
        raise CliError(
            f"expected --host to be a loopback address ({', '.join(LOOPBACK_HOSTS)}), found "
            f"{host!r}: the sandbox's admin routes have no authentication"
        )


def _checked_secrets(secrets: tuple[str, ...]) -> list[str]:
    """Every secret of every --secret (or of CODAT_WEBHOOK_SECRET), checked as serve checks it."""
    split = [part for secret in secrets for part in secret.replace(",", " ").split()]
    try:
        return config.check_webhook_secrets(split)
    except config.ConfigError as error:
        source = click.get_current_context().get_parameter_source("secrets")
        prefix = "--secret: " if source is click.core.ParameterSource.COMMANDLINE else ""
        raise CliError("\n".join(prefix + line for line in str(error).splitlines())) from None


def _check_webhook_url(webhook_url: str, secrets: list[str]) -> None:
    if not webhook_url.startswith(("http://", "https://")):
        raise CliError(
            "--webhook-url must be an http(s) URL such as "
            f"http://127.0.0.1:8000/webhooks/codat, found {webhook_url!r}"
        )
    if not secrets:
        raise CliError(
            "--webhook-url needs a signing secret: expected --secret or CODAT_WEBHOOK_SECRET "
            "(make one with `codat-expenses secret`), found none"
        )


@click.command(epilog=example("codat-expenses secret"))
def secret() -> None:
    """Print a fresh webhook signing secret (whsec_<base64>) for serve and sandbox.

    One line on stdout; to set serve's and sandbox's secret from it:

    \b
      export CODAT_WEBHOOK_SECRET=$(codat-expenses secret)
    """
    # Imported here: the sender imports svix, slower to import than the rest of the CLI.
    from processor.sandbox.sender import generate_secret

    click.echo(generate_secret())

"""`codat-expenses sandbox` and `secret`: the local stand-in for Codat and a signing secret."""

from __future__ import annotations

import click

from processor import config
from processor.cli.common import CliError, example, host_option

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@click.command(
    epilog=example("codat-expenses sandbox --webhook-url http://127.0.0.1:8000/webhooks/codat")
)
@host_option
@click.option("--port", type=int, default=8100, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    envvar="CODAT_API_KEY",
    show_envvar=True,
    required=True,
    help="Key clients must send (Basic auth), as serve's CODAT_API_KEY.",
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
    host: str,
    port: int,
    api_key: str,
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
    """
    # Imported here: the stand-in brings Starlette, uvicorn and svix, slow to import.
    from processor.sandbox import serve_sandbox

    _check_loopback(host)
    checked = _checked_secrets(secrets)
    if webhook_url is not None:
        _check_webhook_url(webhook_url, checked)
    serve_sandbox(host, port, api_key, webhook_url, checked, data_read_delay)


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

"""`codat-expenses demo`: a complete onboarding, offline, against the local stand-in for Codat.

It starts the stand-in and the real `serve` process on free loopback ports with a temporary
database, onboards four companies through Codat's API as the seed page describes, sends real
signed webhooks (including a duplicate and an out-of-order delivery), lets the stand-in read
their data (`read.completed.initial` a moment after Link), configures one company with
`codat-expenses configure`, lets Codat report two expense syncs of it (one successful, one
failing), waits for the processor, prints every company's state and timeline, the failed sync
and its reason (`codat-expenses syncs`, and the status document's one sentence), and checks the
outcome.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from processor import clock
from processor.codat.client import CodatClient, new_client
from processor.codat.platforms import resolve_platform
from processor.http.explain import why
from processor.sandbox import SandboxServer
from processor.sandbox.sender import generate_secret

# On a terminal or with COLUMNS set, rich fits the tables to that width; through a pipe, 120.
# Link URLs and ids are printed with click.echo, never wrapped or cut, so they can be copied.
console = Console(
    highlight=False,
    width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120,
)


# Seconds from an accounting connection's first Link to Codat's `read.completed.initial`.
DATA_READ_DELAY = 0.2
# The expense syncs Codat reports for the configured company: one successful, then one failing.
SYNCS: tuple[list[dict[str, str]], ...] = (
    [{"id": "expense-1001", "status": "Completed"}, {"id": "expense-1002", "status": "Completed"}],
    [
        {"id": "expense-1003", "status": "Completed"},
        {
            "id": "expense-1004",
            "status": "ValidationError",
            "message": "Supplier 'Northern Rail' is archived in Xero",
        },
        {"id": "expense-1005", "status": "Completed"},
    ],
)


@dataclass
class Expected:
    """What the demo expects of one company at the end."""

    name: str
    state: str
    partner_connections: int
    company_id: str = ""
    # The verdict on its expense syncs (None: it reports none).
    sync_health: str | None = None


def run_demo(timeout: float = 60.0) -> int:
    """Run the demo; returns the process exit code (0 only if every expectation held)."""
    with tempfile.TemporaryDirectory(prefix="codat-expenses-demo-") as folder:
        return asyncio.run(_demo(Path(folder), timeout))


async def _demo(folder: Path, timeout: float) -> int:
    api_key, secret, token = secrets.token_hex(16), generate_secret(), secrets.token_hex(16)
    port = _free_port()
    webhook_url = f"http://127.0.0.1:{port}/webhooks/codat"
    with SandboxServer(
        api_key=api_key,
        webhook_url=webhook_url,
        secrets=[secret],
        data_read_delay=DATA_READ_DELAY,
    ) as sandbox:
        console.print(f"[bold]stand-in for Codat[/] on {sandbox.url}")
        env = _env(folder, api_key, sandbox.url, secret, token)
        serve = _start_serve(folder, port, env)
        serve_url = f"http://127.0.0.1:{port}"
        try:
            expected = await _onboard(sandbox.url, api_key)
            await _configure(serve_url, env, expected[0], timeout)
            await _report_syncs(sandbox.url, serve_url, token, expected[0], timeout)
            code = await _check(sandbox.url, serve_url, token, expected, timeout)
            if code == 0:
                _show_failed_sync(env, expected[0])
        finally:
            serve.terminate()
            serve.wait(15)
        if code != 0:
            # The log goes with the temporary folder: show its end while it still exists.
            click.echo(_log_tail(folder / "serve.log"), err=True)
        return code


def _log_tail(path: Path, lines: int = 40) -> str:
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join([f"--- last {len(tail)} lines of serve's log ---", *tail])


def _env(folder: Path, api_key: str, codat_url: str, secret: str, token: str) -> dict[str, str]:
    """The environment of `serve` and of the commands the demo runs beside it."""
    return {
        **os.environ,
        "CODAT_API_KEY": api_key,
        "CODAT_BASE_URL": codat_url,
        "CODAT_WEBHOOK_SECRET": secret,
        "DATABASE_URL": f"sqlite:///{folder / 'processor.db'}",
        "STATUS_API_TOKEN": token,
        "RETRY_INITIAL_SECONDS": "0.1",
    }


def _start_serve(folder: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (folder / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "processor", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"serve exited with {process.returncode} before answering /healthz\n"
                + _log_tail(folder / "serve.log")
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                console.print(f"[bold]serve[/] on http://127.0.0.1:{port} (pid {process.pid})")
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    process.wait(10)
    raise SystemExit(
        "serve did not answer 200 on /healthz within 20 s\n" + _log_tail(folder / "serve.log")
    )


async def _onboard(codat_url: str, api_key: str) -> list[Expected]:
    admin = httpx.AsyncClient(base_url=f"{codat_url}/_sandbox", timeout=10)
    async with new_client(codat_url, api_key) as http, admin:
        story = _Stories(CodatClient(http), admin)
        expected = [
            await story.links(),
            await story.unlinks_and_relinks(),
            await story.fails_to_authorize(),
            await story.webhooks_newest_first(),
        ]
        await story.resend_connected(expected[0].company_id)
        return expected


class _Stories:
    """The demo's companies, each a short story told through the stand-in for Codat."""

    def __init__(self, codat: CodatClient, admin: httpx.AsyncClient) -> None:
        self.codat = codat
        self.admin = admin

    async def onboard(self, name: str, platform: str) -> tuple[str, str]:
        key, _ = resolve_platform(platform)
        company = await self.codat.create_company(name)
        connection = await self.codat.create_connection(company["id"], key)
        click.echo(f"onboarded {name!r}: company {company['id']}")
        click.echo(f"  Link URL: {connection['linkUrl']}")
        return company["id"], connection["id"]

    async def post(self, path: str, **kwargs: Any) -> Any:
        answer = await self.admin.post(path, **kwargs)
        answer.raise_for_status()
        return answer.json()

    async def authorize(self, company_id: str, connection_id: str) -> None:
        await self.post(f"/companies/{company_id}/connections/{connection_id}/authorize")

    async def links(self) -> Expected:
        ready = Expected("Sawayn Group", "configured", 1, sync_health="failing")
        ready.company_id, connection = await self.onboard(ready.name, "qhyg")
        await _settle()
        await self.authorize(ready.company_id, connection)
        return ready

    async def unlinks_and_relinks(self) -> Expected:
        # Its data was read after the first Link; after the relink it waits for its choices.
        relink = Expected("Relink & Co", "awaiting_configuration", 1)
        relink.company_id, connection = await self.onboard(relink.name, "gbol")
        await _settle()
        await self.authorize(relink.company_id, connection)
        await _settle(1.0)
        await self.codat.unlink_connection(relink.company_id, connection)
        console.print(f"unlinked {relink.name!r}; the customer links it again")
        await _settle(1.0)
        await self.authorize(relink.company_id, connection)
        return relink

    async def fails_to_authorize(self) -> Expected:
        cancelled = Expected("Cancelled Link Ltd", "pending_auth", 0)
        cancelled.company_id, connection = await self.onboard(cancelled.name, "Xero")
        await _settle()
        await self.post(
            f"/companies/{cancelled.company_id}/connections/{connection}/fail",
            json={"errorMessage": "The user cancelled the authorization."},
        )
        return cancelled

    async def webhooks_newest_first(self) -> Expected:
        """A company whose webhooks arrive late and backwards: connected before created."""
        # Codat does not read its data in the demo: it stays ready, waiting for the first read.
        late = Expected("Late Mail plc", "ready", 1)
        await self.post("/config", json={"autoWebhooks": False, "dataReadDelay": None})
        late.company_id, connection = await self.onboard(late.name, "fbrh")
        await self.authorize(late.company_id, connection)
        state = (await self.admin.get("/state")).json()
        bodies = [b for b in state["events"] if _company_of(b) == late.company_id]
        for body in reversed(bodies):
            await self.post("/webhooks/send", json={"body": body})
        console.print(f"sent {len(bodies)} webhooks for {late.name!r} newest first")
        await self.post("/config", json={"autoWebhooks": True, "dataReadDelay": DATA_READ_DELAY})
        return late

    async def resend_connected(self, company_id: str) -> None:
        """Svix delivers at least once: send the connected message again, with the same id."""
        state = (await self.admin.get("/state")).json()
        original = next(
            d
            for d in state["deliveries"]
            if d["eventType"] == "connection.connected"
            and any(
                b.get("id") == d["eventId"] and _company_of(b) == company_id
                for b in state["events"]
            )
        )
        body = next(b for b in state["events"] if b.get("id") == original["eventId"])
        await self.post(
            "/webhooks/send", json={"body": body, "messageId": original["messageId"], "repeat": 2}
        )
        console.print(f"resent message {original['messageId']} twice (a duplicate delivery)")


async def _configure(serve_url: str, env: dict[str, str], want: Expected, timeout: float) -> None:
    """Once the company awaits its configuration, choose the first of each choice with
    `codat-expenses configure`, as an operator (or the expense app) would."""
    headers = {"Authorization": f"Bearer {env['STATUS_API_TOKEN']}"}
    company = want.company_id
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=serve_url, headers=headers, timeout=10) as http:
        while True:
            document = (await http.get(f"/companies/{company}")).json()
            options = await http.get(f"/companies/{company}/options")
            waiting = document["state"] == "awaiting_configuration"
            if waiting and document["configuration"]["status"] == "not_set" and options.is_success:
                break
            if time.monotonic() > deadline:
                console.print(f"[red]{want.name!r} never awaited its configuration[/]")
                return
            await asyncio.sleep(0.1)
    choices = options.json()
    console.print(
        f"{want.name!r} awaits its configuration: {len(choices['bankAccounts'])} bank accounts, "
        f"{len(choices['suppliers'])} suppliers, {len(choices['customers'])} customers to "
        "choose from (GET /companies/{id}/options)"
    )
    args = [
        "configure",
        company,
        "--bank-account",
        choices["bankAccounts"][0]["id"],
        "--supplier",
        choices["suppliers"][0]["id"],
        "--customer",
        choices["customers"][0]["id"],
    ]
    click.echo("$ codat-expenses " + " ".join(args))
    done = subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    click.echo(done.stdout.rstrip())
    if done.returncode != 0:
        click.echo(done.stderr.rstrip(), err=True)


async def _report_syncs(
    codat_url: str, serve_url: str, token: str, want: Expected, timeout: float
) -> None:
    """Codat syncs the configured company's expenses twice and says so by webhook: the first
    sync succeeds, the second fails for one transaction (the stand-in's admin API)."""
    headers = {"Authorization": f"Bearer {token}"}
    admin = httpx.AsyncClient(base_url=f"{codat_url}/_sandbox", timeout=10)
    server = httpx.AsyncClient(base_url=serve_url, headers=headers, timeout=10)
    async with admin, server:
        for transactions in SYNCS:
            answer = await admin.post(
                f"/companies/{want.company_id}/syncs", json={"transactions": transactions}
            )
            answer.raise_for_status()
            sync = answer.json()["sync"]
            console.print(
                f"Codat synced {len(transactions)} expenses of {want.name!r}: sync "
                f"{sync['syncId']} {sync['syncStatus']}"
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                document = (await server.get(f"/companies/{want.company_id}")).json()
                if ((document.get("sync") or {}).get("latest") or {}).get("syncId") == sync[
                    "syncId"
                ]:
                    break
                await asyncio.sleep(0.1)


def _show_failed_sync(env: dict[str, str], want: Expected) -> None:
    """The failed sync as an operator finds it: `codat-expenses syncs`."""
    console.rule(Text(f"{want.name}: expense syncs"))
    click.echo(f"$ codat-expenses syncs {want.company_id}")
    done = subprocess.run(
        [sys.executable, "-m", "processor", "syncs", want.company_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    click.echo(done.stdout.rstrip())
    if done.returncode != 0:
        click.echo(done.stderr.rstrip(), err=True)


async def _check(
    codat_url: str, serve_url: str, token: str, expected: list[Expected], timeout: float
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=serve_url, headers=headers, timeout=10) as http:
        documents = await _wait(http, expected, timeout)
    state = httpx.get(f"{codat_url}/_sandbox/state", timeout=10).json()
    failures = []
    for want in expected:
        document = documents[want.company_id]
        partners = _partner_connections(state, want.company_id)
        _print_company(document, len(partners))
        if document["state"] != want.state:
            failures.append(f"{want.name}: state {document['state']}, expected {want.state}")
        health = (document.get("sync") or {}).get("health")
        if health != want.sync_health:
            failures.append(f"{want.name}: sync health {health}, expected {want.sync_health}")
        if len(partners) != want.partner_connections:
            failures.append(
                f"{want.name}: {len(partners)} partner expense connections in Codat, "
                f"expected {want.partner_connections}"
            )
    if failures:
        for failure in failures:
            console.print(f"[red]FAIL[/] {failure}")
        return 1
    console.print(
        f"[green]OK[/] {len(expected)} companies reached their expected state, "
        "each ready one with exactly one partner expense connection"
    )
    return 0


async def _wait(
    http: httpx.AsyncClient, expected: list[Expected], timeout: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    documents: dict[str, dict[str, Any]] = {}
    while True:
        for want in expected:
            answer = await http.get(f"/companies/{want.company_id}")
            if answer.status_code == 200:
                documents[want.company_id] = answer.json()
        settled = all(
            want.company_id in documents
            and documents[want.company_id]["state"] == want.state
            and not documents[want.company_id]["pending"]
            and not documents[want.company_id]["pendingEvents"]
            and (documents[want.company_id].get("sync") or {}).get("health") == want.sync_health
            and not _unlisted(documents[want.company_id])
            for want in expected
        )
        if settled or time.monotonic() > deadline:
            return documents
        await asyncio.sleep(0.1)


def _unlisted(document: dict[str, Any]) -> bool:
    """A failed latest sync whose failing transactions are not known yet."""
    latest = (document.get("sync") or {}).get("latest") or {}
    return latest.get("outcome") == "failed" and latest.get("failingCount") is None


def _print_company(document: dict[str, Any], partners: int) -> None:
    console.rule(Text(document["name"] or ""))
    click.echo(f"company {document['id']}")
    accounting = document["accountingConnection"] or {}
    console.print(
        f"state [bold]{document['state']}[/]; accounting connection "
        f"{accounting.get('platformName', '-')} {accounting.get('status', '-')}; "
        f"partner expense connections in Codat: {partners}"
    )
    configuration = document["configuration"]
    if configuration["status"] != "unchecked":
        chosen = ", ".join(
            f"{name} {configuration[name] or '-'}"
            for name in ("bankAccount", "supplier", "customer")
        )
        console.print(f"expense configuration {configuration['status']}: {chosen}")
    if document["lastError"]:
        console.print(f"last error: {document['lastError']['message']}")
    sync = document.get("sync") or {}
    if sync.get("health"):
        console.print(f"expense syncs [bold]{sync['health']}[/]")
    click.echo(why(document, clock.parse(clock.now())))
    # On a narrow terminal, cells fold onto more lines rather than lose their ends.
    headers = ("generated", "event", "source", "deliveries", "outcome")
    table = Table(*(Column(header, overflow="fold") for header in headers))
    for event in document["events"]:
        table.add_row(
            event["generatedDate"][:23],
            event["eventType"],
            event["source"],
            str(event["deliveries"]),
            event["outcome"],
        )
    console.print(table)


def _company_of(body: dict[str, Any]) -> str | None:
    payload = body.get("payload") or {}
    reference = payload.get("referenceCompany") or {}
    return reference.get("id") or payload.get("id") or body.get("CompanyId")


def _partner_connections(state: dict[str, Any], company_id: str) -> list[dict[str, Any]]:
    for company in state["companies"]:
        if company["id"] == company_id:
            return [
                c
                for c in company["connections"]
                if c.get("sourceType") == "Expense" and not c.get("deleted")
            ]
    return []


async def _settle(seconds: float = 0.3) -> None:
    """Give webhooks a moment, as a customer would take to click through Link."""
    await asyncio.sleep(seconds)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

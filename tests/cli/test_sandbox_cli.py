"""`codat-expenses sandbox`, `secret` and `demo` as an operator runs them: real processes."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

from processor import config
from processor.codat.client import basic_auth
from processor.sandbox import LoopbackServer
from processor.sandbox.app import ROUTES
from tests.cli_support import Cli, Result
from tests.support import API_KEY, free_port, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
# Valid base64 up to the last two characters, so only the check of the whole value refuses it.
MALFORMED = "whsec_" + base64.b64encode(b"a secret that is long enough!").decode() + "@@"
LINK_URL = re.compile(
    r"https://link-api\.codat\.io/companies/[0-9a-f-]{36}/connections/[0-9a-f-]{36}/start"
)


def good_secret() -> str:
    """A well-formed secret."""
    return "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The command line with no Codat behind it: these commands never call one."""
    return Cli(tmp_path / "processor.db", "http://127.0.0.1:9")


def refused(result: Result) -> str:
    """The one line a refused command printed on stderr (exit 2, nothing on stdout)."""
    assert result.returncode == 2, result.describe()
    assert result.stdout == "", result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, found {len(lines)}\n{result.describe()}"
    return lines[0]


def run_bounded(cli: Cli, *args: str) -> Result:
    """A command that must end by itself; a sandbox that starts instead fails the test."""
    try:
        return cli.run(*args, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"codat-expenses {' '.join(args)} kept running; expected it to refuse")


# --- sandbox: refusals before it binds a port ------------------------------------------------


def test_sandbox_refuses_a_malformed_secret_option(cli: Cli) -> None:
    port = str(free_port())
    line = refused(run_bounded(cli, "sandbox", "--port", port, "--secret", MALFORMED))
    assert line.startswith("codat-expenses: --secret: "), line
    assert "CODAT_WEBHOOK_SECRET" in line and "must hold whsec_<base64>" in line, line
    assert f"found one of {len(MALFORMED)} characters" in line, line
    assert MALFORMED not in line and MALFORMED.removeprefix("whsec_")[:8] not in line, line


def test_sandbox_refuses_a_malformed_secret_in_the_environment_as_serve_does(cli: Cli) -> None:
    cli.env["CODAT_WEBHOOK_SECRET"] = f"{good_secret()} {MALFORMED}"
    sandbox_line = refused(run_bounded(cli, "sandbox", "--port", str(free_port())))
    serve_line = refused(run_bounded(cli, "serve", "--port", str(free_port())))
    assert sandbox_line == serve_line, (sandbox_line, serve_line)
    assert "'CODAT_WEBHOOK_SECRET' must hold whsec_<base64>" in sandbox_line, sandbox_line
    assert MALFORMED not in sandbox_line, sandbox_line


def test_sandbox_refuses_a_webhook_url_without_a_secret(cli: Cli) -> None:
    line = refused(
        run_bounded(
            cli, "sandbox", "--port", str(free_port()), "--webhook-url", "http://127.0.0.1:9/x"
        )
    )
    assert "expected --secret or CODAT_WEBHOOK_SECRET" in line and "found none" in line, line


def test_sandbox_refuses_a_webhook_url_that_is_not_http(cli: Cli) -> None:
    args = ("--port", str(free_port()), "--secret", good_secret())
    line = refused(run_bounded(cli, "sandbox", *args, "--webhook-url", "127.0.0.1:8000/hook"))
    assert "--webhook-url must be an http(s) URL" in line, line
    assert "found '127.0.0.1:8000/hook'" in line, line


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::"])
def test_sandbox_refuses_a_host_that_is_not_loopback(cli: Cli, host: str) -> None:
    line = refused(run_bounded(cli, "sandbox", "--port", str(free_port()), "--host", host))
    assert "expected --host to be a loopback address" in line and f"found {host!r}" in line, line


def test_sandbox_help_lists_every_admin_route_as_the_readme_does(cli: Cli) -> None:
    # The routes as the app declares them, with the path parameters named as Codat names them.
    admin = [
        (method, re.sub(r"\{(\w+)_id\}", r"{\1Id}", route.path))
        for route in ROUTES
        if isinstance(route, Route) and route.path.startswith("/_sandbox")
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]
    assert len(admin) >= 11, admin
    text = cli.ok("sandbox", "--help").stdout
    readme = README.read_text()
    missing_help = [
        f"{m} {p}" for m, p in admin if not re.search(rf"^ +{m} +{re.escape(p)}$", text, re.M)
    ]
    missing_readme = [f"{m} {p}" for m, p in admin if f"| `{m} {p}` |" not in readme]
    assert not missing_help, f"not in `sandbox --help`: {missing_help}\n{text}"
    assert not missing_readme, f"not in the README's admin route table: {missing_readme}"


# --- secret ----------------------------------------------------------------------------------


def test_secret_prints_one_fresh_secret_that_serve_accepts(cli: Cli) -> None:
    first, second = (cli.ok("secret") for _ in range(2))
    for result in (first, second):
        assert result.stderr == "", result.describe()
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+=*\n", result.stdout), result.describe()
        key = base64.b64decode(result.stdout.strip().removeprefix("whsec_"), validate=True)
        assert 24 <= len(key) <= 32, f"expected 24-32 random bytes, found {len(key)}"
    assert first.stdout != second.stdout, "two runs printed the same secret"
    secret = first.stdout.strip()
    settings = config.load({"CODAT_API_KEY": "k", "CODAT_WEBHOOK_SECRET": secret})
    assert settings.webhook_secrets == (secret,)


# --- sandbox: every delivery attempt logged, with its answer ---------------------------------


class Receiver:
    """A webhook consumer: answers 503 to the first attempt, then verifies with svix."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.attempts = 0
        self.app = Starlette(routes=[Route("/hook", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.attempts += 1
        if self.attempts == 1:
            return Response('{"error": "not yet"}', status_code=503)
        try:
            self.webhook.verify(await request.body(), dict(request.headers))
        except WebhookVerificationError:
            return Response('{"error": "bad signature"}', status_code=401)
        return Response(status_code=204)


@pytest.fixture
def sandbox_process(cli: Cli, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """`codat-expenses sandbox` with a secret from `codat-expenses secret`, webhooks to a
    receiver on loopback; yields (sandbox URL, its log file, the receiver's hook URL)."""
    secret = cli.ok("secret").stdout.strip()
    receiver = Receiver(secret)
    log = tmp_path / "sandbox.log"
    port = free_port()
    with LoopbackServer(receiver.app) as hook:
        hook_url = f"{hook.url}/hook"
        args = ["--port", str(port), "--api-key", API_KEY, "--webhook-url", hook_url]
        args += ["--data-read-delay", "0.5"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                cli.command("sandbox", *args, "--secret", secret),
                env=cli.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            def started() -> bool:
                assert process.poll() is None, f"sandbox exited: {log.read_text()}"
                return "Uvicorn running" in log.read_text()

            wait_for(started, timeout=15, what=f"the sandbox to start (log: {log})")
            yield f"http://127.0.0.1:{port}", log, hook_url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def test_sandbox_data_read_delay_option_sets_the_delay_of_codat_s_first_read(
    sandbox_process: tuple[str, Path, str],
) -> None:
    url, _, _ = sandbox_process
    state = httpx.get(f"{url}/_sandbox/state", timeout=10).json()
    assert state["config"]["dataReadDelay"] == 0.5, state["config"]


def test_sandbox_logs_each_delivery_attempt_and_its_answer(
    sandbox_process: tuple[str, Path, str],
) -> None:
    url, log, hook_url = sandbox_process
    answer = httpx.post(
        f"{url}/companies",
        json={"name": "Sawayn Group"},
        headers={"Authorization": basic_auth(API_KEY)},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    head = rf"webhook (msg_\w+) \(company\.created\) -> {hook_url}"
    failed = re.compile(
        head + r' attempt 1/\d+: answered 503 \{"error": "not yet"\}; next attempt in [\d.]+ s$'
    )
    delivered = re.compile(head + r" attempt 2/\d+: answered 204$")

    def logged() -> tuple[re.Match[str], re.Match[str]] | None:
        # Off a terminal, log lines are JSON objects (LOG_FORMAT's default); the banner is not.
        text = log.read_text().splitlines()
        lines = [json.loads(line) for line in text if line.startswith("{")]
        messages = [
            line["message"]
            for line in lines
            if line["logger"] == "processor.sandbox" and line["level"] == "info"
        ]
        first = next((m for m in map(failed.search, messages) if m), None)
        second = next((m for m in map(delivered.search, messages) if m), None)
        return (first, second) if first and second else None

    first, second = wait_for(logged, timeout=10, what=f"two delivery lines in {log}")
    assert first.group(1) == second.group(1), "the retry did not keep the message id"


# --- sandbox sync and rate-limit: scripting a running stand-in ------------------------------


def delivered(url: str, event_type: str) -> list[dict[str, object]]:
    """The stand-in's deliveries of `event_type` that its receiver accepted (signature checked)."""
    deliveries = httpx.get(f"{url}/_sandbox/state", timeout=10).json()["deliveries"]
    return [d for d in deliveries if d["eventType"] == event_type and d["delivered"]]


def test_sandbox_sync_records_a_failed_sync_and_sends_its_webhook(
    cli: Cli, sandbox_process: tuple[str, Path, str]
) -> None:
    url, _, _ = sandbox_process
    auth = {"Authorization": basic_auth(API_KEY)}
    company = httpx.post(f"{url}/companies", json={"name": "Sawayn Group"}, headers=auth).json()
    reason = "Supplier is archived in Xero: ask the customer to restore it"
    result = cli.ok(
        "sandbox", "sync", company["id"], "--url", url, "--outcome", "failed",
        "--transaction", "Completed", "--transaction", f"PushError:{reason}",
    )  # fmt: skip
    assert re.fullmatch(
        rf"sync [0-9a-f-]{{36}} of company {company['id']}: Failed at \S+, 1 of 2 transactions "
        r"failing; expenses\.sync\.unsuccessful\n",
        result.stdout,
    ), result.describe()
    # Codat's status endpoint answers with it, and the webhook reached the receiver, signed.
    latest = httpx.get(
        f"{url}/companies/{company['id']}/sync/expenses/syncs/latest/status", headers=auth
    ).json()
    assert latest["syncId"] == result.stdout.split()[1], latest
    assert (latest["syncStatus"], latest["errorMessage"]) == ("Failed", reason), latest
    wait_for(lambda: delivered(url, "expenses.sync.unsuccessful"), what="the sync webhook")

    # A successful sync whose webhook Codat never sent, at a given time, as JSON; CODAT_BASE_URL
    # names the stand-in as it does for serve.
    cli.env["CODAT_BASE_URL"] = url
    answer = cli.ok(
        "sandbox", "sync", company["id"], "--webhook", "none", "--sync-id", "s-2",
        "--at", "2026-12-01T10:02:00Z", "--transaction", "Completed", "--json",
    ).json()  # fmt: skip
    assert answer["webhook"] is None, answer
    assert answer["sync"]["syncId"] == "s-2" and answer["sync"]["syncStatus"] == "Complete"
    assert answer["sync"]["syncUtc"] == "2026-12-01T10:02:00Z", answer


def test_sandbox_rate_limit_sends_codat_s_notices(
    cli: Cli, sandbox_process: tuple[str, Path, str]
) -> None:
    url, _, _ = sandbox_process
    reached = cli.ok(
        "sandbox", "rate-limit", "reached", "--remaining", "3",
        "--expiry", "2026-12-08T00:00:00Z", "--url", url,
    )  # fmt: skip
    assert reached.stdout == (
        "sent client.rateLimit.reached: 3 of 1000 daily calls left, the quota resets at "
        "2026-12-08T00:00:00Z\n"
    ), reached.describe()
    reset = cli.ok("sandbox", "rate-limit", "reset", "--url", url, "--json").json()
    assert reset["eventType"] == "client.rateLimit.reset", reset
    assert reset["payload"]["quotaRemaining"] == reset["payload"]["dailyQuota"], reset
    for event_type in ("client.rateLimit.reached", "client.rateLimit.reset"):
        wait_for(partial(delivered, url, event_type), what=f"{event_type} delivered")


def test_sandbox_sync_says_what_the_stand_in_refused(
    cli: Cli, sandbox_process: tuple[str, Path, str]
) -> None:
    url, _, _ = sandbox_process
    unknown = cli.run("sandbox", "sync", "no-such-company", "--url", url)
    assert unknown.returncode == 1, unknown.describe()
    assert "answered 404" in unknown.stderr, unknown.describe()
    assert "No company was found with id no-such-company" in unknown.stderr, unknown.describe()
    auth = {"Authorization": basic_auth(API_KEY)}
    company = httpx.post(f"{url}/companies", json={"name": "Refused Ltd"}, headers=auth).json()
    bogus = cli.run("sandbox", "sync", company["id"], "--url", url, "--transaction", "Bogus")
    assert bogus.returncode == 1, bogus.describe()
    assert "transaction status must be one of" in bogus.stderr, bogus.describe()
    assert "got 'Bogus'" in bogus.stderr, bogus.describe()
    # Nothing listening: said, exit 1; not loopback: refused before any request, exit 2.
    gone = cli.run("sandbox", "rate-limit", "reset", "--url", f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 1, gone.describe()
    assert "expected the stand-in (`codat-expenses sandbox`) to answer at" in gone.stderr
    line = refused(cli.run("sandbox", "rate-limit", "reset", "--url", "https://api.codat.io"))
    assert "expected the stand-in on loopback" in line and "'https://api.codat.io'" in line


def test_sandbox_still_requires_its_api_key_to_run(cli: Cli) -> None:
    del cli.env["CODAT_API_KEY"]
    result = run_bounded(cli, "sandbox", "--port", str(free_port()))
    assert result.returncode == 2, result.describe()
    assert "Missing option '--api-key'" in result.stderr, result.describe()


# --- demo ------------------------------------------------------------------------------------


def test_demo_prints_whole_link_urls_on_a_narrow_terminal_and_no_log_size(cli: Cli) -> None:
    cli.env["COLUMNS"] = "60"
    result = cli.ok("demo", "--timeout", "30", timeout=90)
    lines = result.stdout.splitlines()
    onboarded = [line for line in lines if line.startswith("onboarded ")]
    urls = [line for line in lines if "Link URL" in line]
    assert len(onboarded) == 4, result.describe()
    assert len(urls) == len(onboarded), result.describe()
    for line in urls:
        assert LINK_URL.fullmatch(line.split("Link URL: ", 1)[-1]), f"cut Link URL: {line!r}"
    assert not re.search(r"\d+ bytes|serve log", result.output), result.describe()
    # One company all the way to configured (by `configure`), one waiting for its choices.
    assert re.search(r"^company \S+: configured$", result.stdout, re.M), result.describe()
    assert "state configured;" in result.stdout, result.describe()
    assert "state awaiting_configuration;" in result.stdout, result.describe()
    # Its failed expense sync and the reason, in its sentence and in `codat-expenses syncs`.
    assert "expense syncs failing" in result.stdout, result.describe()
    assert "failed for 1 of 3 transactions" in result.stdout, result.describe()
    assert result.stdout.count("is archived in Xero") >= 2, result.describe()

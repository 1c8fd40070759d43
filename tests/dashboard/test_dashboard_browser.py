"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against the real
app on loopback, its store filled by the stand-in's real signed webhooks.

A person signs in, reads the funnel, opens a state's list, searches, finds the stuck and the
failed company and reads why each is where it is, signs out, and then sees no company data.
Screenshots of the funnel and of a company page land in tests/dashboard/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from processor.sandbox.sender import generate_secret, new_message_id
from processor.sandbox.webhook_bodies import sync_event
from tests.conftest import Codat
from tests.support import TOKEN, Serve, post_webhook, wait_for

SCREENSHOTS = Path(__file__).parent / "screenshots"
PARTNER_PATH = "/companies/{}/sync/expenses/connections/partnerExpense"
NAMES = {"waiting": "Waiting Ltd", "ready": "Ready Ltd", "failing": "Failing Ltd"}
SYNC_ERROR = "Supplier is archived in Xero"
# On both backends; one threshold from the environment, the other its default.
pytestmark = [
    pytest.mark.backends("sqlite", "postgres"),
    pytest.mark.serve_env(STUCK_LINKED_SECONDS="3600"),
]


def chromium() -> str:
    """Debian's chromium; missing, a failure in CI (or with REQUIRE_CHROMIUM=1), else a skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Debian's chromium is not installed (apt-get install chromium; make test does)"
    if os.environ.get("CI") or os.environ.get("REQUIRE_CHROMIUM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as playwright:
        # --no-sandbox: chromium refuses to start its sandbox as root, which tests run as in CI.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


def _onboard(codat: Codat, name: str) -> tuple[str, str]:
    company = codat.create_company(name)
    connection = codat.create_connection(company["id"])
    return company["id"], connection["id"]


@pytest.fixture
def companies(serve: Serve, codat: Codat, secret: str) -> dict[str, str]:
    """Three companies, each told to serve by the stand-in's signed webhooks: one waiting for
    the customer, one ready whose latest expense sync failed, one whose partner expense
    connection Codat refused with a 400."""
    waiting, _ = _onboard(codat, NAMES["waiting"])
    ready, ready_connection = _onboard(codat, NAMES["ready"])
    failing, failing_connection = _onboard(codat, NAMES["failing"])
    codat.faults([{"method": "POST", "path": PARTNER_PATH.format(failing), "status": 400}])
    codat.authorize(ready, ready_connection)
    codat.authorize(failing, failing_connection)
    serve.wait_state(waiting, "pending_auth")
    serve.wait_state(ready, "ready")

    def failed() -> dict[str, Any] | None:
        document = serve.company(failing)
        return document if document and document["failed"] else None

    wait_for(failed, what="the failing company's command to be failed")
    # The ready company's latest expense sync failed; and one webhook signed with another
    # secret is refused, for the health panel to count.
    [body] = [c for c in codat.state()["companies"] if c["id"] == ready]
    transactions: list[dict[str, Any]] = [
        {"id": "t-1", "status": "Completed", "errorMessage": None},
        {"id": "t-2", "status": "Failed", "errorMessage": SYNC_ERROR},
    ]
    sync = sync_event("expenses.sync.unsuccessful", body, "sync-1", transactions)
    answer = post_webhook(serve.url, sync, secret, message_id=new_message_id())
    assert answer.status_code == 200, answer.text
    refused = post_webhook(serve.url, sync, generate_secret(), message_id=new_message_id())
    assert refused.status_code == 401, refused.text

    def sync_failing() -> dict[str, Any] | None:
        document = serve.company(ready)
        return document if document and document["sync"]["health"] == "failing" else None

    wait_for(sync_failing, what="the ready company's sync to be failing")
    return {"waiting": waiting, "ready": ready, "failing": failing}


def _no_company_data(page: Page, companies: dict[str, str]) -> None:
    text = page.content()
    for key, company_id in companies.items():
        assert company_id not in text, f"{key} company id shown while signed out"
        assert NAMES[key].split()[0] not in text, f"{key} company name shown while signed out"


def _no_token(page: Page) -> None:
    assert TOKEN not in page.content(), f"the token is on {page.url}"


def test_a_person_signs_in_walks_the_funnel_reads_why_and_signs_out(
    serve: Serve, browser: Browser, companies: dict[str, str]
) -> None:
    context = browser.new_context(base_url=serve.url)
    page = context.new_page()

    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    _no_company_data(page, companies)
    page.fill("#token", "not-the-token")
    page.click("text=Sign in >> nth=-1")
    expect(page.get_by_role("alert")).to_contain_text("not one of STATUS_API_TOKEN")
    assert "not-the-token" not in page.content()
    _no_company_data(page, companies)

    page.fill("#token", TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Onboarding funnel")).to_be_visible()
    _no_token(page)
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
    assert TOKEN not in cookie["value"]

    funnel = page.locator("#funnel")
    for state, count in (("pending_auth", 1), ("linked", 1), ("ready", 1), ("deleted", 0)):
        expect(funnel.locator("tr", has_text=state)).to_contain_text(str(count))
    expect(funnel.locator("tr", has_text="all")).to_contain_text("3")

    expect(page.locator("input[name=pending_auth_after]")).to_have_value("24h")
    expect(page.locator("input[name=linked_after]")).to_have_value("1h")

    # Health at a glance: the /healthz verdict, the last hour's webhooks (the refused one
    # included, and said to be this instance's count), the worker lag.
    health = page.locator("#health")
    expect(health.locator("tr", has_text="/healthz")).to_contain_text("ok")
    last_hour = health.locator("tr", has_text="Webhooks in the last hour")
    expect(last_hour).to_contain_text("rejected:signature 1")
    expect(last_hour).to_contain_text("stored")
    expect(last_hour).to_contain_text("Counted by this instance")
    expect(health.locator("tr", has_text="Worker lag")).to_contain_text(
        "every event received is folded"
    )
    # Syncs: the ready company is failing, with Codat's reason; no company is silent.
    failing_syncs = page.locator("#sync-failing")
    expect(failing_syncs).to_contain_text(NAMES["ready"])
    expect(failing_syncs).to_contain_text(f"failed for 1 of 2 transactions: '{SYNC_ERROR}'")
    expect(page.get_by_role("heading", name="Failing: the latest sync failed: 1")).to_be_visible()
    expect(page.get_by_role("heading", name="Silent: configured, no sync")).to_contain_text(": 0")
    expect(page.locator("#rate-limit")).to_have_count(0)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "funnel.png"), full_page=True)

    # A state's list, newest first, then searched by name across every state.
    page.get_by_role("link", name="pending_auth").click()
    expect(page.get_by_role("heading")).to_contain_text("Companies in pending_auth: 1")
    expect(page.locator("#companies")).to_contain_text(NAMES["waiting"])
    expect(page.locator("#companies")).not_to_contain_text(NAMES["ready"])
    # Each row says why, in the company page's words.
    row = page.locator("#companies tr", has_text=NAMES["waiting"])
    expect(row).to_contain_text("Waiting for the customer to authorize")
    page.select_option("select[name=state]", "")
    page.fill("input[name=q]", "ready")
    page.get_by_role("button", name="Search").click()
    listed = page.locator("#companies")
    expect(listed).to_contain_text(NAMES["ready"])
    expect(listed).not_to_contain_text(NAMES["failing"])
    listed.get_by_role("link", name=companies["ready"]).click()
    expect(page.locator("#why")).to_contain_text("Waiting for Codat's first read of the")

    # Stuck: with thresholds of 0 s, the waiting company is stuck in pending_auth.
    page.goto("/")
    page.fill("input[name=pending_auth_after]", "0s")
    page.get_by_role("button", name="Apply").click()
    stuck = page.locator("#stuck-pending_auth")
    stuck.get_by_role("link", name=companies["waiting"]).click()
    why = page.locator("#why")
    expect(why).to_contain_text("Waiting for the customer to authorize")
    expect(why).to_contain_text(f"link-api.codat.io/companies/{companies['waiting']}")
    expect(page.locator("#timeline")).to_contain_text("connection.created")
    _no_token(page)

    # Failed: the funnel lists the dead letter; its company says what to do.
    page.goto("/")
    page.locator("#failed").get_by_role("link", name=companies["failing"]).click()
    expect(page.locator("#why")).to_contain_text("Creating the partner expense connection failed")
    expect(page.locator("#why")).to_contain_text(f"replay --company {companies['failing']}")
    expect(page.locator("#timeline")).to_contain_text("connection.connected")
    # Each call made to Codat about it, with its status: the refused POST with its correlationId.
    calls = page.locator("#timeline tr.call")
    refused = calls.filter(has_text="POST /companies/{id}/sync/expenses/connections/partnerExpense")
    expect(refused).to_contain_text("400 in")
    expect(refused).to_contain_text("correlationId")
    expect(calls.filter(has_text="GET /companies/{id}/connections/{id}").first).to_contain_text(
        "200 in"
    )
    page.screenshot(path=str(SCREENSHOTS / "company.png"), full_page=True)
    _no_token(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert context.cookies() == []
    for path in ("/", "/dashboard/companies", f"/dashboard/companies/{companies['failing']}"):
        page.goto(path)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        _no_company_data(page, companies)
    context.close()


def test_without_the_cookie_no_page_shows_company_data(
    serve: Serve, browser: Browser, companies: dict[str, str]
) -> None:
    page = browser.new_page(base_url=serve.url)
    for path in (
        "/",
        "/?pending_auth_after=0s",
        "/dashboard/companies",
        "/dashboard/companies?state=ready&q=Ready",
        *(f"/dashboard/companies/{company_id}" for company_id in companies.values()),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        _no_company_data(page, companies)
    page.goto("/dashboard/nothing-here")
    assert "application/json" not in page.content()
    page.close()

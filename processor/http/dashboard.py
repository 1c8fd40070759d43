"""The read-only dashboard: server-rendered pages for a person, signed in with a query token.

Every page is HTML, including its errors; without a valid session cookie no company data is
rendered (pages redirect to the sign-in form at `/`). Reads go through the app's readers, as
the query API's do, and a company page explains the same status document the API answers.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from handlers.state import STATES, OnboardingState
from processor import clock
from processor.http import listing, session
from processor.http.documents import Health, company_document, summary
from processor.http.explain import ago, row_why, sync_why, why
from processor.http.queries import COMPANY_ID, health, healthz
from processor.http.services import services
from store import CompanyRow, Store

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
PAGE_SIZE = 50
# Rows of each list on the funnel page; a list's length is counted up to `listing.CAP`.
SHOWN = 50
MAX_FORM_BYTES = 4096
MAX_STUCK_DAYS = 3650
STUCK_STATES = (OnboardingState.PENDING_AUTH, OnboardingState.LINKED)
_DURATION = re.compile(r"(\d{1,9})([smhd]?)", re.ASCII)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Pages hold customer data: never cached, never framed, no script or remote resource.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


class AnyText(Convertor[str]):
    """Any rest of a path, newlines included (`path` stops at one, and the API's JSON 404
    would answer a person)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", AnyText())


def _page(request: Request, name: str, code: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(
        request,
        name,
        {"signed_in": _signed_in(request), **context},
        status_code=code,
        headers=HEADERS,
    )


def _problem(request: Request, status: int, message: str) -> Response:
    return _page(request, "problem.html", status, status=status, message=message)


def _session_key(request: Request) -> bytes:
    return session.server_key(services(request).settings.webhook_secrets)


def _signed_in(request: Request) -> bool:
    cookie, tokens = request.cookies.get(session.COOKIE), services(request).settings.status_tokens
    return session.valid(cookie, _session_key(request), tokens, int(time.time()))


def _to_sign_in() -> Response:
    return RedirectResponse("/", status_code=303, headers=HEADERS)


async def home(request: Request) -> Response:
    """The funnel, stuck companies, failed commands, failing syncs and health; the sign-in
    form when signed out."""
    if not _signed_in(request):
        return _sign_in_form(request)
    app = services(request)
    defaults = {
        OnboardingState.PENDING_AUTH: app.settings.stuck_pending_auth,
        OnboardingState.LINKED: app.settings.stuck_linked,
    }
    after: dict[str, str] = {}
    for state in STUCK_STATES:
        given = request.query_params.get(f"{state}_after") or duration(defaults[state])
        if _seconds(given) is None:
            return _problem(
                request,
                400,
                f"expected {state}_after to be a duration of at most {MAX_STUCK_DAYS} days "
                f"such as 90s, 10m, 24h or 3d, found {given[:40]!r}",
            )
        after[state] = given
    now = datetime.now(UTC)
    since = {
        state: clock.format_datetime(now - timedelta(seconds=_seconds(given) or 0))
        for state, given in after.items()
    }
    verdict = Health(now=now, silent_after=app.settings.sync_silent_after)
    quiet_since = clock.format_datetime(now - timedelta(seconds=verdict.silent_after))
    cap = listing.CAP

    def read(store: Store) -> dict[str, Any]:
        with store.read_snapshot():
            counts = store.state_counts()
            return {
                "funnel": [(state, counts.get(state, 0)) for state in STATES],
                "total": sum(counts.values()),
                "stuck": {
                    state: (
                        store.companies_unchanged_since(state, since[state], limit=SHOWN),
                        store.count_unchanged_since(state, since[state], cap=cap),
                    )
                    for state in after
                },
                "failed": store.recent_failed_effects(limit=SHOWN),
                "failed_count": store.count_failed_effects(cap=cap),
                "failing": _explained(store.failing_syncs(limit=SHOWN), verdict),
                "failing_count": store.count_failing_syncs(cap=cap),
                "silent": _explained(store.silent_syncs(quiet_since, limit=SHOWN), verdict),
                "silent_count": store.count_silent_syncs(quiet_since, cap=cap),
                "pending_events": store.count_events(pending=True),
                "oldest_pending": store.oldest_pending_received_at(),
                "pause": store.rate_limit_pause(clock.format_datetime(now)),
            }

    facts = await app.readers.run(read)
    checked = await healthz(request)
    return _page(
        request,
        "funnel.html",
        **facts,
        after=after,
        now=now,
        ago=_ago(now),
        name_of=listing.name_of,
        cap=cap,
        shown=SHOWN,
        silent_after=duration(verdict.silent_after),
        healthz=json.loads(bytes(checked.body)),
        healthz_code=checked.status_code,
        last_hour=sorted(app.health.last_hour().items()),
        lag=_lag(facts["oldest_pending"], now),
    )


def duration(seconds: float) -> str:
    """A number of seconds as the stuck form writes it: 24h, 10m, 3d, 90s."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0 and whole >= size and not (unit == "d" and whole < 3 * size):
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _explained(rows: list[CompanyRow], verdict: Health) -> list[tuple[CompanyRow, str]]:
    """Each company with the sentence about its expense syncs, from its document's summary."""
    now = verdict.now or datetime.now(UTC)
    return [(row, sync_why(summary(row, row.company_id, verdict), now)) for row in rows]


def _lag(oldest: str | None, now: datetime) -> str:
    if oldest is None:
        return "none: every event received is folded"
    seconds = max(0.0, (now - clock.parse(oldest)).total_seconds())
    return f"{seconds:.1f} s (the oldest event waiting was received at {oldest})"


def _sign_in_form(request: Request, status: int = 200, message: str | None = None) -> Response:
    enabled = bool(services(request).settings.status_tokens)
    return _page(request, "sign_in.html", status, message=message, enabled=enabled)


def _from_another_site(request: Request) -> Response | None:
    """403 for a form a browser sent from another site (its own `Sec-Fetch-Site` header): no
    page elsewhere can sign an operator in or out. Clients that send no such header (scripts)
    are not browsers, and are let through."""
    site = request.headers.get("sec-fetch-site")
    if site is None or site in ("same-origin", "none"):
        return None
    message = f"expected a form sent from this dashboard, found one from a {site} page"
    return _problem(request, 403, message)


async def sign_in(request: Request) -> Response:
    """Check the token of the form; on success, the session cookie and back to the funnel."""
    if (refused := _from_another_site(request)) is not None:
        return refused
    tokens = services(request).settings.status_tokens
    if not tokens:
        return _sign_in_form(request, 403, "the dashboard is disabled: STATUS_API_TOKEN is empty")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return _sign_in_form(
                request, 413, f"expected a form of at most {MAX_FORM_BYTES} bytes, found more"
            )
    presented = parse_qs(body.decode("latin-1")).get("token", [""])[0].strip()
    if not presented:
        return _sign_in_form(request, 400, "expected a token of the query API, found none")
    token = session.matching_token(presented, tokens)
    if token is None:
        return _sign_in_form(request, 401, "that token is not one of STATUS_API_TOKEN")
    answer = RedirectResponse("/", status_code=303, headers=HEADERS)
    answer.set_cookie(
        session.COOKIE,
        session.issue(_session_key(request), token, int(time.time())),
        max_age=session.LIFETIME,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


async def sign_out(request: Request) -> Response:
    if (refused := _from_another_site(request)) is not None:
        return refused
    answer = _to_sign_in()
    answer.delete_cookie(
        session.COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return answer


async def companies(request: Request) -> Response:
    """Companies newest first, optionally in one state; or those whose id or name starts with
    the search."""
    if not _signed_in(request):
        return _to_sign_in()
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in STATES:
        return _problem(
            request, 400, f"expected state to be one of {', '.join(STATES)}, found {state[:40]!r}"
        )
    before = None
    if params.get("before"):
        before = listing.decode_cursor(params["before"])
        if before is None:
            return _problem(
                request, 400, "expected before to be a cursor from an Older link, found another"
            )
    search = (params.get("q") or "").strip()[:200]
    found = await services(request).readers.run(
        lambda store: (
            listing.search(store, search, state=state, size=PAGE_SIZE)
            if search
            else listing.newest_first(store, state=state, before=before, size=PAGE_SIZE)
        )
    )
    now = datetime.now(UTC)
    verdict = Health(now=now, silent_after=services(request).settings.sync_silent_after)
    whys = {
        row.company_id: row_why(summary(row, row.company_id, verdict), now)
        for row in found.companies
    }
    return _page(
        request,
        "companies.html",
        whys=whys,
        listing=found,
        state=state,
        search=search,
        first_page=before is None,
        size=PAGE_SIZE,
        states=STATES,
        name_of=listing.name_of,
        ago=_ago(now),
    )


async def company(request: Request) -> Response:
    """One company: the sentence saying why it is where it is, its facts, commands, timeline."""
    if not _signed_in(request):
        return _to_sign_in()
    company_id = request.scope["path"].removeprefix("/dashboard/companies/")
    if not COMPANY_ID.fullmatch(company_id):
        return _problem(
            request, 400, f"expected a Codat company id (a UUID), found {company_id[:100]!r}"
        )
    document = await services(request).readers.run(
        lambda store: company_document(store, company_id, health=health(request))
    )
    if document is None:
        return _problem(request, 404, f"no company {company_id!r} in the store")
    now = datetime.now(UTC)
    return _page(
        request,
        "company.html",
        doc=document,
        why=why(document, now),
        ago=_ago(now),
        timeline=timeline(document),
    )


def timeline(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The company's events (by receipt) and its calls to Codat, in one list by time."""
    entries = [{"at": e["receivedAt"], "event": e} for e in document["events"]]
    entries += [{"at": c["at"], "call": c} for c in document["codatCalls"]]
    return sorted(entries, key=lambda entry: str(entry["at"]))


async def not_found(request: Request) -> Response:
    """Any other dashboard address: a page a person can read, not the API's JSON."""
    return _problem(request, 404, f"no dashboard page at {request.url.path[:200]!r}")


def _ago(now: datetime) -> Any:
    def of(text: str | None) -> str:
        return ago(clock.parse(text), now) if text else ""

    return of


def _seconds(text: str) -> int | None:
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    return seconds if seconds <= MAX_STUCK_DAYS * 86400 else None

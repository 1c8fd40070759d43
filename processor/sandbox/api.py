"""Codat's onboarding endpoints, answered from the stand-in's state."""

import asyncio
import json
import re
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from processor.codat.platforms import PLATFORMS
from processor.sandbox.errors import (
    COMPANY_NAME_DISALLOWED,
    PARTNER_EXPENSE_NAME,
    PLATFORM_KEY,
    Endpoint,
    ErrorAnswer,
    Json,
    invalid,
)
from processor.sandbox.idempotency import fingerprint
from processor.sandbox.state import RequestContext, Sandbox


def sandbox_of(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def json_object(request: Request, *, required: bool = True) -> Json:
    body = await request.body()
    if not body.strip() and not required:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise ErrorAnswer(400, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ErrorAnswer(
            400, f"The request body must be a JSON object, got {type(data).__name__}."
        )
    return data


def company_fields(data: Json) -> tuple[str, str | None, dict[str, str]]:
    """Validate a create-company body; return the name with disallowed characters stripped."""
    name, description, tags = data.get("name"), data.get("description"), data.get("tags") or {}
    if not isinstance(name, str) or not name.strip():
        raise invalid("name", "The company name is required and must be a non-empty string.")
    name = COMPANY_NAME_DISALLOWED.sub("", name).strip()
    if not name:
        raise invalid("name", "The company name has no allowed character (A-Za-z0-9 -',&@.?!).")
    if description is not None and not isinstance(description, str):
        raise invalid("description", "The description must be a string.")
    if not isinstance(tags, dict) or len(tags) > 10:
        raise invalid("tags", "Tags must be an object with at most 10 entries.")
    for key, value in tags.items():
        if not 1 <= len(key) <= 27 or not isinstance(value, str) or len(value) > 100:
            raise invalid(
                f"tags.{key}", "Tag keys have 1-27 characters; values are strings of <= 100."
            )
    return name, description, tags


def page_params(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", "1"))
        page_size = int(request.query_params.get("pageSize", "100"))
    except ValueError:
        raise ErrorAnswer(400, "Error parsing query: page and pageSize must be integers.") from None
    if page < 1 or not 1 <= page_size <= 5000:
        raise ErrorAnswer(400, "Error parsing query: page >= 1 and 1 <= pageSize <= 5000.")
    return page, page_size


def query_filter(query: str | None) -> Callable[[Json], bool]:
    """Codat's query language, only its `field=value` and `field!=value` joined by `&&`."""
    if not query:
        return lambda _item: True
    clauses = []
    for clause in query.split("&&"):
        match = re.fullmatch(r"\s*(\w+)\s*(!=|=)\s*(.*?)\s*", clause)
        if match is None:
            raise ErrorAnswer(400, f"Error parsing query: malformed clause {clause!r}.")
        clauses.append(match.groups())
    return lambda item: all(
        (str(item.get(name)) == value) == (op == "=") for name, op, value in clauses
    )


# --- API endpoints --------------------------------------------------------------------------


def codat_api(endpoint: Endpoint) -> Endpoint:
    """Wrap an API endpoint with Codat's authentication, errors and Idempotency-Key."""

    async def wrapped(request: Request) -> Response:
        sandbox = sandbox_of(request)
        if not sandbox.authorized(request.headers.get("authorization")):
            return ErrorAnswer(401).response()
        key = request.headers.get("idempotency-key")
        if request.method not in ("POST", "PATCH") or not key:
            return await _answer(endpoint, request)
        try:
            stored = sandbox.idempotency.begin(key, fingerprint(request, await request.body()))
        except ErrorAnswer as exc:
            return exc.response()
        if stored is not None:
            request.scope["sandbox"].replayed = True
            return Response(stored.body, stored.status or 200, media_type=stored.media_type)
        try:
            response = await _answer(endpoint, request)
        except BaseException:
            sandbox.idempotency.abandon(key)
            raise
        sandbox.idempotency.finish(key, response)
        return response

    return wrapped


async def _answer(endpoint: Endpoint, request: Request) -> Response:
    try:
        response = await endpoint(request)
    except ErrorAnswer as exc:
        response = exc.response()
    context: RequestContext = request.scope["sandbox"]
    if context.hold_after_create:
        await asyncio.sleep(context.hold_after_create)
    return response


async def create_company(request: Request) -> Response:
    name, description, tags = company_fields(await json_object(request))
    return JSONResponse(sandbox_of(request).create_company(name, description, tags))


async def get_company(request: Request) -> Response:
    record = sandbox_of(request).company(request.path_params["company_id"])
    return JSONResponse(record.as_codat())


async def create_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    key = (await json_object(request)).get("platformKey")
    if not isinstance(key, str) or not PLATFORM_KEY.fullmatch(key):
        raise invalid("platformKey", f"platformKey must be 4 lowercase letters, got {key!r}.")
    if key not in PLATFORMS:
        raise invalid("platformKey", f"No integration has the platform key {key!r}.", "Integration")
    return JSONResponse(sandbox.create_connection(record, key))


async def list_connections(request: Request) -> Response:
    record = sandbox_of(request).company(request.path_params["company_id"])
    return paged(request, record.live_connections())


def paged(request: Request, items: list[Json]) -> JSONResponse:
    """One page of `items` (filtered by `query`), with Codat's paging fields and links."""
    page, page_size = page_params(request)
    keep = query_filter(request.query_params.get("query"))
    kept = [item for item in items if keep(item)]
    path = request.url.path
    links = {
        "self": {"href": path},
        "current": {"href": f"{path}?page={page}&pageSize={page_size}"},
    }
    if page * page_size < len(kept):
        links["next"] = {"href": f"{path}?page={page + 1}&pageSize={page_size}"}
    if page > 1:
        links["previous"] = {"href": f"{path}?page={page - 1}&pageSize={page_size}"}
    start = (page - 1) * page_size
    return JSONResponse(
        {
            "results": kept[start : start + page_size],
            "pageNumber": page,
            "pageSize": page_size,
            "totalResults": len(kept),
            "_links": links,
        }
    )


async def get_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    return JSONResponse(sandbox.connection(record, request.path_params["connection_id"]))


async def update_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    connection = sandbox.connection(record, request.path_params["connection_id"])
    data = await json_object(request)
    if set(data) != {"status"} or data["status"] != "Unlinked":
        raise invalid("status", f'The only update is {{"status": "Unlinked"}}, got {data!r}.')
    return JSONResponse(sandbox.unlink(record, connection))


async def create_partner_expense_connection(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    return JSONResponse(sandbox.create_partner_expense(record))


# --- Sync for Expenses: the choices and the configuration ----------------------------------


CONFIG_FIELDS = ("bankAccount", "supplier", "customer")


async def get_mapping_options(request: Request) -> Response:
    sandbox = sandbox_of(request)
    data = sandbox.data_of(sandbox.company(request.path_params["company_id"]))
    return JSONResponse(
        {
            "expenseProvider": PARTNER_EXPENSE_NAME,
            "accounts": data.accounts,
            "trackingCategories": data.tracking_categories,
            "taxRates": data.tax_rates,
        }
    )


async def list_suppliers(request: Request) -> Response:
    sandbox = sandbox_of(request)
    return paged(
        request, sandbox.data_of(sandbox.company(request.path_params["company_id"])).suppliers
    )


async def list_customers(request: Request) -> Response:
    sandbox = sandbox_of(request)
    return paged(
        request, sandbox.data_of(sandbox.company(request.path_params["company_id"])).customers
    )


async def get_expenses_config(request: Request) -> Response:
    record = sandbox_of(request).company(request.path_params["company_id"])
    # Codat does not document its answer for a company never configured; the stand-in gives
    # the three objects without ids, which its CompanyConfiguration schema allows.
    return JSONResponse(record.expenses_config or {name: {} for name in CONFIG_FIELDS})


async def set_expenses_config(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    data = await json_object(request)
    missing = [
        name
        for name in CONFIG_FIELDS
        if not isinstance(data.get(name), dict)
        or not isinstance(data[name].get("id"), str)
        or not data[name]["id"]
    ]
    if missing:
        raise ErrorAnswer(
            400,
            "Validation failed: bankAccount, supplier and customer are all required, each"
            f' {{"id": "..."}}; missing or invalid: {", ".join(missing)}.',
            errors=[(f"{name}.id", f"{name}.id is required.", "Required") for name in missing],
        )
    return JSONResponse(sandbox.set_expenses_config(record, data))

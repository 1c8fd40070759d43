"""The admin API under /_sandbox: play the customer, script faults, send webhooks, dump state."""

import asyncio
import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from processor.sandbox.api import json_object, sandbox_of
from processor.sandbox.errors import ErrorAnswer, Json
from processor.sandbox.faults import FaultRule
from processor.sandbox.sender import check_secrets, new_message_id
from processor.sandbox.state import CompanyRecord, Sandbox


def _target(request: Request) -> tuple[Sandbox, CompanyRecord, Json]:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    return sandbox, record, sandbox.connection(record, request.path_params["connection_id"])


async def admin_config(request: Request) -> Response:
    sandbox, data = sandbox_of(request), await json_object(request)
    config = sandbox.webhooks
    url, prefix = data.get("webhookUrl", config.url), data.get("headerPrefix", config.header_prefix)
    try:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"webhookUrl must be an http(s) URL or null, got {url!r}.")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"headerPrefix must be a non-empty string, got {prefix!r}.")
        secrets = check_secrets(data["secrets"]) if data.get("secrets") else []
        delays = tuple(float(d) for d in data.get("retryDelays", config.retry_delays))
        read_delay = data.get("dataReadDelay", config.data_read_delay)
        if read_delay is not None:
            read_delay = float(read_delay)
            if read_delay < 0:
                raise ValueError(f"dataReadDelay must be >= 0 seconds or null, got {read_delay}.")
    except (ValueError, TypeError, AttributeError) as exc:
        raise ErrorAnswer(400, f"Invalid webhook config: {exc}") from None
    config.url, config.header_prefix, config.retry_delays = url, prefix, delays
    config.data_read_delay = read_delay
    if "secrets" in data:
        config.secrets = secrets
    config.auto = bool(data.get("autoWebhooks", config.auto))
    return JSONResponse(config.to_json())


async def admin_authorize(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    return JSONResponse(sandbox.authorize(record, connection))


async def admin_fail(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    data = await json_object(request, required=False)
    message = str(data.get("errorMessage", "The user cancelled the authorization."))
    return JSONResponse(sandbox.fail(record, connection, message))


async def admin_deauthorize(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    return JSONResponse(sandbox.deauthorize(record, connection))


async def admin_read(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    return JSONResponse(sandbox.complete_read(record, connection))


async def admin_delete_connection(request: Request) -> Response:
    sandbox, record, connection = _target(request)
    sandbox.delete_connection(record, connection)
    return Response(status_code=204)


async def admin_delete_company(request: Request) -> Response:
    sandbox = sandbox_of(request)
    sandbox.delete_company(sandbox.company(request.path_params["company_id"]))
    return Response(status_code=204)


async def admin_legacy(request: Request) -> Response:
    sandbox = sandbox_of(request)
    record = sandbox.company(request.path_params["company_id"])
    record.legacy = bool((await json_object(request, required=False)).get("legacy", True))
    return JSONResponse({"companyId": record.company["id"], "legacy": record.legacy})


async def admin_set_faults(request: Request) -> Response:
    try:
        data = json.loads(await request.body())
        rules = [FaultRule.from_json(item) for item in data] if isinstance(data, list) else None
    except (ValueError, TypeError) as exc:
        raise ErrorAnswer(400, f"Invalid fault rules: {exc}") from None
    if rules is None:
        raise ErrorAnswer(400, "Fault rules are a JSON list of rule objects.")
    sandbox = sandbox_of(request)
    sandbox.faults.rules.extend(rules)
    return JSONResponse([rule.to_json() for rule in sandbox.faults.rules])


async def admin_clear_faults(request: Request) -> Response:
    sandbox_of(request).faults.rules.clear()
    return JSONResponse([])


async def admin_state(request: Request) -> Response:
    return JSONResponse(sandbox_of(request).dump())


async def admin_send_webhook(request: Request) -> Response:
    sandbox, data = sandbox_of(request), await json_object(request)
    body = data.get("body")
    if "raw" in data:
        body = str(data["raw"]).encode()
    elif not isinstance(body, dict):
        raise ErrorAnswer(400, "Give 'body' (a webhook body object) or 'raw' (a string).")
    repeat, concurrent = int(data.get("repeat", 1)), bool(data.get("concurrent", False))
    message_id = data.get("messageId") or new_message_id()

    def send() -> "asyncio.Task[Json]":
        return sandbox.deliver(
            body,
            message_id=message_id,
            secrets=data.get("secrets"),
            header_prefix=data.get("headerPrefix"),
        )

    if concurrent:
        records = list(await asyncio.gather(*(send() for _ in range(repeat))))
    else:
        records = [await send() for _ in range(repeat)]
    return JSONResponse({"deliveries": records})


async def codat_error_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ErrorAnswer):
        return exc.response()
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return ErrorAnswer(status, f"No route for {request.method} {request.url.path}.").response()

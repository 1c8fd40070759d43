"""The stand-in's Starlette app: routes, the fault layer and the lifespan."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from processor.codat.aiohttp_transport import CodatTransport
from processor.sandbox.admin import (
    admin_authorize,
    admin_clear_faults,
    admin_config,
    admin_deauthorize,
    admin_delete_company,
    admin_delete_connection,
    admin_fail,
    admin_legacy,
    admin_read,
    admin_send_webhook,
    admin_set_faults,
    admin_state,
    codat_error_handler,
)
from processor.sandbox.api import (
    codat_api,
    create_company,
    create_connection,
    create_partner_expense_connection,
    get_company,
    get_connection,
    get_expenses_config,
    get_mapping_options,
    list_connections,
    list_customers,
    list_suppliers,
    set_expenses_config,
    update_connection,
)
from processor.sandbox.errors import DROPPED, ErrorAnswer, Json
from processor.sandbox.sender import DEFAULT_RETRY_DELAYS
from processor.sandbox.state import WEBHOOKS_IN_FLIGHT, RequestContext, Sandbox, WebhookConfig
from processor.sandbox.syncs import (
    admin_rate_limit,
    admin_sync,
    get_sync,
    last_successful_sync,
    latest_sync,
    list_sync_transactions,
    list_syncs,
)

COMPANY = "/companies/{company_id}"
CONNECTION = COMPANY + "/connections/{connection_id}"
ADMIN_CONNECTION = "/_sandbox" + CONNECTION
SYNCS = COMPANY + "/sync/expenses/syncs"

ROUTES = [
    Route("/companies", codat_api(create_company), methods=["POST"]),
    Route(COMPANY, codat_api(get_company), methods=["GET"]),
    Route(COMPANY + "/connections", codat_api(create_connection), methods=["POST"]),
    Route(COMPANY + "/connections", codat_api(list_connections), methods=["GET"]),
    Route(CONNECTION, codat_api(get_connection), methods=["GET"]),
    Route(CONNECTION, codat_api(update_connection), methods=["PATCH"]),
    Route(
        COMPANY + "/sync/expenses/connections/partnerExpense",
        codat_api(create_partner_expense_connection),
        methods=["POST"],
    ),
    Route(COMPANY + "/sync/expenses/config", codat_api(get_expenses_config), methods=["GET"]),
    Route(COMPANY + "/sync/expenses/config", codat_api(set_expenses_config), methods=["POST"]),
    Route(
        COMPANY + "/sync/expenses/mappingOptions", codat_api(get_mapping_options), methods=["GET"]
    ),
    Route(COMPANY + "/data/suppliers", codat_api(list_suppliers), methods=["GET"]),
    Route(COMPANY + "/data/customers", codat_api(list_customers), methods=["GET"]),
    # The fixed paths first: `latest` is not a sync id.
    Route(SYNCS + "/latest/status", codat_api(latest_sync), methods=["GET"]),
    Route(SYNCS + "/lastSuccessful/status", codat_api(last_successful_sync), methods=["GET"]),
    Route(SYNCS + "/list/status", codat_api(list_syncs), methods=["GET"]),
    Route(SYNCS + "/{sync_id}/status", codat_api(get_sync), methods=["GET"]),
    Route(SYNCS + "/{sync_id}/transactions", codat_api(list_sync_transactions), methods=["GET"]),
    Route("/_sandbox/config", admin_config, methods=["POST"]),
    Route("/_sandbox" + COMPANY + "/syncs", admin_sync, methods=["POST"]),
    Route("/_sandbox/rateLimit", admin_rate_limit, methods=["POST"]),
    Route("/_sandbox/state", admin_state, methods=["GET"]),
    Route("/_sandbox/faults", admin_set_faults, methods=["POST"]),
    Route("/_sandbox/faults", admin_clear_faults, methods=["DELETE"]),
    Route("/_sandbox/webhooks/send", admin_send_webhook, methods=["POST"]),
    Route(ADMIN_CONNECTION + "/authorize", admin_authorize, methods=["POST"]),
    Route(ADMIN_CONNECTION + "/fail", admin_fail, methods=["POST"]),
    Route(ADMIN_CONNECTION + "/deauthorize", admin_deauthorize, methods=["POST"]),
    Route(ADMIN_CONNECTION + "/read", admin_read, methods=["POST"]),
    Route(ADMIN_CONNECTION, admin_delete_connection, methods=["DELETE"]),
    Route("/_sandbox" + COMPANY, admin_delete_company, methods=["DELETE"]),
    Route("/_sandbox" + COMPANY + "/legacy", admin_legacy, methods=["POST"]),
]


class SandboxApp(Starlette):
    """The Starlette app behind a fault layer that can delay, fail or drop API requests.

    The fault layer sits outside Starlette's own middleware because dropping a connection means
    returning a value to uvicorn, which then closes it unanswered; Starlette would swallow it.
    """

    @property
    def sandbox(self) -> Sandbox:
        sandbox: Sandbox = self.state.sandbox
        return sandbox

    async def __call__(  # type: ignore[override]
        self, scope: Scope, receive: Receive, send: Send
    ) -> str | None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await super().__call__(scope, receive, send)
            return None
        headers = dict((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        entry: Json = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "idempotencyKey": headers.get("idempotency-key"),
            "status": None,
            "fault": None,
            "replayed": False,
        }
        self.sandbox.requests.append(entry)
        context = scope["sandbox"] = RequestContext()
        try:
            return await self._faulted(scope, receive, self._observed(send, entry), entry)
        finally:
            entry["replayed"] = context.replayed

    def _observed(self, send: Send, entry: Json) -> Send:
        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                extra = self.sandbox.rate_limit_headers().items()
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in extra),
                ]
            await send(message)

        return observed

    async def _faulted(self, scope: Scope, receive: Receive, send: Send, entry: Json) -> str | None:
        rule = self.sandbox.faults.take(scope["method"], scope["path"])
        if rule is None:
            await super().__call__(scope, receive, send)
            return None
        entry["fault"] = rule.to_json()
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.hold_after_create is not None:
            scope["sandbox"].hold_after_create = rule.hold_after_create
            messages: list[Message] = []

            async def keep(message: Message) -> None:
                messages.append(message)

            await super().__call__(scope, receive, keep)
            if not (rule.drop or rule.status):
                for message in messages:
                    await send(message)
                return None
        if rule.drop:
            return DROPPED
        if rule.status:
            await rule.error().response()(scope, receive, send)
            return None
        await super().__call__(scope, receive, send)
        return None


def create_app(
    api_key: str,
    *,
    webhook_url: str | None = None,
    secrets: Sequence[str] = (),
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    data_read_delay: float | None = None,
) -> Starlette:
    """The sandbox app; its lifespan opens the HTTP client webhooks go out through.

    `data_read_delay`: seconds from an accounting connection's first Linked to Codat's
    `read.completed.initial`; None sends it only when asked (`/_sandbox/.../read`).
    """
    webhooks = WebhookConfig(
        webhook_url,
        list(secrets),
        retry_delays=tuple(retry_delays),
        data_read_delay=data_read_delay,
    )
    sandbox = Sandbox(api_key, webhooks)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The Codat client's transport (aiohttp's): the stand-in's webhooks cost it a fraction
        # of the CPU they did through httpx's default transport.
        transport = CodatTransport(
            limits=httpx.Limits(
                max_connections=WEBHOOKS_IN_FLIGHT, max_keepalive_connections=WEBHOOKS_IN_FLIGHT
            )
        )
        async with httpx.AsyncClient(transport=transport) as client:
            sandbox.http = client
            sandbox.loop = asyncio.get_running_loop()
            try:
                yield
            finally:
                await sandbox.close()
                sandbox.http = None
                sandbox.loop = None

    app = SandboxApp(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={ErrorAnswer: codat_error_handler, HTTPException: codat_error_handler},
    )
    app.state.sandbox = sandbox
    return app

"""The Starlette application: declared routes, resources opened in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processor.codat.client import CodatClient, new_client
from processor.config import Settings
from processor.http.queries import get_company, healthz, list_companies
from processor.http.webhooks import error, receive_webhook
from processor.intake.health import WebhookHealth
from processor.intake.signature import Verifier
from processor.intake.writer import Writer
from processor.work.readers import Readers
from processor.work.reconcile import sweep_periodically
from processor.work.worker import Worker
from store import Store

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the endpoints share, opened for the life of the app."""

    settings: Settings
    verifier: Verifier
    writer: Writer
    readers: Readers
    worker: Worker
    health: WebhookHealth


def create_app(
    settings: Settings,
    *,
    codat_transport: httpx.AsyncBaseTransport | None = None,
    run_worker: bool = True,
) -> Starlette:
    """The processor's HTTP app; the worker runs inside it unless `run_worker` is False."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        writer = Writer(settings.database_path, busy_timeout=settings.busy_timeout)
        writer.start()
        readers = Readers(settings.database_path)
        http = new_client(
            settings.base_url,
            settings.api_key,
            timeout=settings.codat_timeout,
            transport=codat_transport,
        )
        worker_reads = Store.open(settings.database_path, readonly=True)
        worker = Worker(writer, worker_reads, CodatClient(http), settings)
        health = WebhookHealth(settings.rejection_window, settings.rejection_threshold)
        verifier = Verifier(settings.webhook_secrets)
        services = Services(settings, verifier, writer, readers, worker, health)
        tasks = []
        if run_worker:
            tasks.append(asyncio.create_task(worker.run()))
            if settings.reconcile_interval > 0:
                sweep = sweep_periodically(writer, worker.codat, settings.reconcile_interval)
                tasks.append(asyncio.create_task(sweep))
        try:
            yield {"services": services}
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await worker.drain()
            await http.aclose()
            readers.close()
            worker_reads.close()
            await writer.stop()

    return Starlette(
        routes=[
            Route("/webhooks/codat", receive_webhook, methods=["POST"]),
            Route("/companies", list_companies, methods=["GET"]),
            Route("/companies/{company_id:path}", get_company, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 404:
        detail = f"no route {request.url.path!r}"
    response = error(exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
    return error(500, "internal error; it is logged")

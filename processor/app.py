"""The Starlette application: declared routes, resources opened in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from processor.codat.aiohttp_transport import CodatTransport
from processor.codat.calls import CallLog, flush_periodically
from processor.codat.client import CodatClient, new_client
from processor.codat.metered import MeteredTransport
from processor.config import Settings
from processor.http import dashboard, errors
from processor.http.metrics import metrics
from processor.http.openapi import openapi
from processor.http.queries import get_company, get_options, healthz, list_companies
from processor.http.services import Services
from processor.http.syncs import get_syncs
from processor.http.webhooks import receive_webhook
from processor.intake.health import WebhookHealth
from processor.intake.signature import Verifier
from processor.intake.writer import Writer
from processor.metrics import Metrics
from processor.work.readers import Readers
from processor.work.reconcile import sweep_periodically
from processor.work.worker import Worker
from store import open_store


def create_app(
    settings: Settings,
    *,
    codat_transport: httpx.AsyncBaseTransport | None = None,
    run_worker: bool = True,
) -> Starlette:
    """The processor's HTTP app; the worker runs inside it unless `run_worker` is False."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        # Closed in the reverse order of opening, whatever fails on the way.
        async with AsyncExitStack() as stack:
            services = await _open(stack, settings, codat_transport)
            if run_worker:
                _start(stack, services.worker.run())
                if settings.reconcile_interval > 0:
                    codat = services.worker.codat
                    sweep = sweep_periodically(
                        services.worker.writer,
                        codat,
                        settings.reconcile_interval,
                        metrics=services.metrics,
                        silent_after=settings.sync_silent_after,
                    )
                    _start(stack, sweep)
            yield {"services": services}

    return Starlette(
        routes=[
            Route("/webhooks/codat", receive_webhook, methods=["POST"]),
            Route("/companies", list_companies, methods=["GET"]),
            Route("/companies/{company_id}/options", get_options, methods=["GET"]),
            Route("/companies/{company_id}/syncs", get_syncs, methods=["GET"]),
            Route("/companies/{company_id:path}", get_company, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/", dashboard.home, methods=["GET"]),
            Route("/sign-in", dashboard.sign_in, methods=["POST"]),
            Route("/sign-out", dashboard.sign_out, methods=["POST"]),
            Route("/dashboard/companies", dashboard.companies, methods=["GET"]),
            Route("/dashboard/companies/{company_id:anytext}", dashboard.company, methods=["GET"]),
            Route("/dashboard/{rest:anytext}", dashboard.not_found, methods=["GET"]),
        ],
        exception_handlers=errors.handlers(),
        lifespan=lifespan,
    )


async def _open(
    stack: AsyncExitStack, settings: Settings, transport: httpx.AsyncBaseTransport | None
) -> Services:
    writer = Writer(settings.database_url, busy_timeout=settings.busy_timeout)
    writer.start()
    stack.push_async_callback(writer.stop)
    readers = Readers(
        settings.database_url, pool_size=settings.pool_size, timeout=settings.busy_timeout
    )
    stack.callback(readers.close)
    worker_reads = open_store(settings.database_url, readonly=True)
    stack.callback(worker_reads.close)
    measured = Metrics()
    # Each call about a company, noted for its timeline and written about once a second.
    calls = CallLog()
    _start(stack, flush_periodically(calls, writer.call))
    http = new_client(
        settings.base_url,
        settings.api_key,
        timeout=settings.codat_timeout,
        transport=MeteredTransport(transport or CodatTransport(), measured, calls),
    )
    stack.push_async_callback(http.aclose)
    work_writer = writer.lane()
    if work_writer is not writer:
        stack.push_async_callback(work_writer.stop)
    worker = Worker(work_writer, worker_reads, CodatClient(http), settings, measured)
    stack.push_async_callback(worker.drain)
    health = WebhookHealth(settings.rejection_window, settings.rejection_threshold)
    health.paused = lambda: worker.pause
    return Services(
        settings, Verifier(settings.webhook_secrets), writer, readers, worker, health, measured
    )


def _start(stack: AsyncExitStack, work: Coroutine[Any, Any, None]) -> None:
    """Run `work` in the background until the app stops."""
    task = asyncio.create_task(work)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)

"""What the endpoints share, opened once in the app's lifespan, and the one way to reach it."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from processor.config import Settings
from processor.intake.health import WebhookHealth
from processor.intake.signature import Verifier
from processor.intake.writer import Writer
from processor.metrics import Metrics
from processor.work.readers import Readers
from processor.work.worker import Worker


@dataclass(frozen=True)
class Services:
    """The resources of a running app; frozen: endpoints use them, never replace them."""

    settings: Settings
    verifier: Verifier
    writer: Writer
    readers: Readers
    worker: Worker
    health: WebhookHealth
    metrics: Metrics


def services(request: Request) -> Services:
    """The app's services, as the lifespan handed them over."""
    found = request.state.services
    assert isinstance(found, Services)
    return found

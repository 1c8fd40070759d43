"""A Svix-like webhook sender: signs each attempt afresh and retries until a 2xx answer."""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets as random_secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx
from svix.webhooks import Webhook

DEFAULT_RETRY_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Delivery:
    """The outcome of sending one webhook message, over all its attempts.

    `status` is the HTTP status of the last attempt, None when that attempt got no answer.
    """

    message_id: str
    attempts: int
    status: int | None
    delivered: bool
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt:
    """One attempt at delivering a message, as the sender reports it to `on_attempt`.

    `status` is the HTTP status, None when no answer came; `error` is None for a 2xx answer;
    `retry_in` is the wait before the next attempt, None when no attempt follows.
    """

    message_id: str
    url: str
    number: int
    of: int
    status: int | None
    error: str | None
    retry_in: float | None


def new_message_id() -> str:
    """A Svix-style message id."""
    return "msg_" + random_secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def generate_secret() -> str:
    """A fresh Svix-style signing secret (`whsec_` + base64 of 24 random bytes)."""
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(24)).decode()


def check_secrets(secrets: str | Sequence[str]) -> list[str]:
    """The secrets as a list, or ValueError naming the first one svix cannot sign with."""
    secrets = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secrets:
        raise ValueError("At least one webhook signing secret is needed, got none.")
    for secret in secrets:
        try:
            Webhook(secret)
        except Exception as exc:
            raise ValueError(
                f"Webhook secret {secret[:6]!r}... is not a whsec_ base64 secret ({exc})."
            ) from None
    return secrets


def sign_headers(
    secret_or_secrets: str | Sequence[str],
    msg_id: str,
    body: bytes,
    timestamp: int | None = None,
    prefix: str = "webhook",
) -> dict[str, str]:
    """Headers of one signed attempt; several secrets give several `v1,` entries (a rotation)."""
    secrets = [secret_or_secrets] if isinstance(secret_or_secrets, str) else secret_or_secrets
    if not secrets:
        raise ValueError("sign_headers needs at least one secret, got none.")
    timestamp = int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp
    signatures = " ".join(_sign(secret, msg_id, timestamp, body) for secret in secrets)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": signatures,
        "content-type": "application/json",
    }


def _sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        # svix signs text only; a fault tool must still sign bytes that are not UTF-8.
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
        digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), text)


class WebhookSender:
    """Delivers signed webhook messages to one endpoint the way Svix does, with quick retries.

    The first attempt is immediate; after a failed attempt the sender waits the next delay of
    `retry_delays` and tries again, so a message gets at most `1 + len(retry_delays)` attempts.
    """

    def __init__(
        self,
        url: str,
        secrets: str | list[str],
        *,
        client: httpx.AsyncClient | None = None,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        header_prefix: str = "webhook",
        timeout: float = 15.0,
        on_attempt: Callable[[Attempt], None] | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.url = url
        # Shared by the senders of one endpoint: the attempts in flight at once (the others
        # wait their turn, in order, instead of queueing in the HTTP client's pool).
        self.slots = slots
        self.on_attempt = on_attempt
        self.secrets = check_secrets(secrets)
        self.retry_delays = tuple(retry_delays)
        self.header_prefix = header_prefix
        self.timeout = timeout
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient()

    async def send(self, body: bytes, *, message_id: str | None = None) -> Delivery:
        """Send one message until a 2xx answer or the retries run out."""
        message_id = message_id or new_message_id()
        errors: list[str] = []
        status: int | None = None
        delays = (None, *self.retry_delays)
        for attempt, delay in enumerate(delays, start=1):
            if delay:
                await asyncio.sleep(delay)
            status, error = await self._attempt(message_id, body)
            if self.on_attempt is not None:
                last = error is None or attempt == len(delays)
                retry_in = None if last else self.retry_delays[attempt - 1]
                self.on_attempt(
                    Attempt(message_id, self.url, attempt, len(delays), status, error, retry_in)
                )
            if error is None:
                return Delivery(message_id, attempt, status, True, errors)
            errors.append(f"attempt {attempt}: {error}")
        return Delivery(message_id, len(delays), status, False, errors)

    async def _attempt(self, message_id: str, body: bytes) -> tuple[int | None, str | None]:
        try:
            async with self.slots or contextlib.nullcontext():
                # Signed once its turn comes: the timestamp is that of the attempt.
                headers = sign_headers(self.secrets, message_id, body, prefix=self.header_prefix)
                response = await self._client.post(
                    self.url, content=body, headers=headers, timeout=self.timeout
                )
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return response.status_code, None
        answer = " ".join(response.text.split())
        answer = answer if len(answer) <= 200 else answer[:200] + "..."
        return response.status_code, f"HTTP {response.status_code}" + (
            f" {answer}" if answer else ""
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this sender opened it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

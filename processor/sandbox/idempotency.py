"""Idempotency-Key handling as Codat documents it: replay, 409 in flight, 422 on a new body."""

import json
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from processor.sandbox.errors import IDEMPOTENCY_TTL_SECONDS, ErrorAnswer


@dataclass
class StoredResponse:
    """The first answer to an idempotency key, or None while that request is in flight."""

    fingerprint: str
    expires: float
    status: int | None = None
    body: bytes = b""
    media_type: str = "application/json"


class IdempotencyKeys:
    """Codat's Idempotency-Key semantics: replay, 409 while in flight, 422 on a new body."""

    def __init__(self, ttl: float = IDEMPOTENCY_TTL_SECONDS) -> None:
        self.ttl = ttl
        self.records: dict[str, StoredResponse] = {}

    def begin(self, key: str, fingerprint: str) -> StoredResponse | None:
        """Claim the key, or return the replayable first answer; raises ErrorAnswer otherwise."""
        now = time.monotonic()
        record = self.records.get(key)
        if record is not None and record.expires <= now:
            record = None
        if record is None:
            self.records[key] = StoredResponse(fingerprint, now + self.ttl)
            return None
        if record.fingerprint != fingerprint:
            raise ErrorAnswer(422, f"Idempotency-Key {key} was already used with another request.")
        if record.status is None:
            raise ErrorAnswer(409, f"A request with Idempotency-Key {key} is still in progress.")
        return record

    def finish(self, key: str, response: Response) -> None:
        if response.status_code == 429:
            self.records.pop(key, None)
            return
        record = self.records.get(key)
        if record is None:  # expired while in flight: nothing left to replay
            return
        record.status = response.status_code
        record.body = bytes(response.body)
        record.media_type = response.media_type or "application/json"

    def abandon(self, key: str) -> None:
        self.records.pop(key, None)


def fingerprint(request: Request, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True) if body.strip() else ""
    except ValueError:
        canonical = body.decode(errors="replace")
    return f"{request.method} {request.url.path} {canonical}"

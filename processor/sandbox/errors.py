"""Codat's error answers and the constants the stand-in shares."""

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Codat does not publish the partner expense connection's key and name: these are placeholders.
PARTNER_EXPENSE_KEY = "expn"
PARTNER_EXPENSE_NAME = "Partner Expense"

IDEMPOTENCY_TTL_SECONDS = 90 * 60
DAILY_QUOTA = 1000
COMPANY_NAME_DISALLOWED = re.compile(r"[^A-Za-z0-9\s\-',&@.?!]")
PLATFORM_KEY = re.compile(r"[a-z]{4}")
# Returned by the app to uvicorn, which then closes the connection without any answer.
DROPPED = "sandbox: connection dropped by a fault rule"

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]

ERROR_MESSAGES = {
    400: "The request is not valid.",
    401: "Unauthorized.",
    402: "The account limit for this plan has been reached.",
    403: "This API key is not allowed to use this resource.",
    404: "Not found.",
    409: "The resource is not ready yet.",
    422: "The request cannot be processed.",
    429: "Too many requests in a short time; retry later.",
    500: "An internal error happened; retry later.",
    503: "The API is offline for maintenance; retry later.",
}


# --- Codat's errors -------------------------------------------------------------------------


class ErrorAnswer(Exception):
    """An error answer in Codat's shape, as the stand-in sends it.

    (The client's `CodatError` is what such an answer becomes on the processor's side.)
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        errors: Sequence[tuple[str, str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message or ERROR_MESSAGES.get(status, "Error.")
        self.errors = list(errors)
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> Json:
        validation = None
        if self.errors:
            items = [
                {"itemId": item, "message": message, "validatorName": validator}
                for item, message, validator in self.errors
            ]
            validation = {"errors": items, "warnings": []}
        return {
            "statusCode": self.status,
            "service": "PublicApi",
            "error": self.message,
            "correlationId": uuid.uuid4().hex,
            "validation": validation,
            "canBeRetried": "Unknown",
            "detailedErrorCode": 0,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(item: str, message: str, validator: str = "Validation") -> ErrorAnswer:
    return ErrorAnswer(400, f"Validation failed: {message}", errors=[(item, message, validator)])

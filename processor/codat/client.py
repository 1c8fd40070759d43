"""A small client for the Codat endpoints used in onboarding, over an injectable httpx client."""

from __future__ import annotations

import base64
import email.utils
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

# 409: a request with the same Idempotency-Key is still in flight at Codat.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


class CodatError(Exception):
    """A failed call to Codat: an HTTP error answer, a timeout or a connection error."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool,
        retry_after: float | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.correlation_id = correlation_id


@dataclass(frozen=True)
class RateLimit:
    """Codat's rate-limit headers from the latest answer."""

    limit: int | None
    remaining: int | None
    reset: str | None


def basic_auth(api_key: str) -> str:
    return "Basic " + base64.b64encode(api_key.encode()).decode()


def new_client(
    base_url: str, api_key: str, *, timeout: float = 10.0, transport: Any = None
) -> httpx.AsyncClient:
    """The httpx client Codat calls go through; `transport` lets tests point it elsewhere."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": basic_auth(api_key), "Accept": "application/json"},
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        transport=transport,
    )


class CodatClient:
    """The onboarding endpoints of Codat's API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.rate_limit = RateLimit(None, None, None)

    async def create_company(
        self, name: str, *, description: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if description:
            body["description"] = description
        return await self._request("POST", "/companies", json=body, key=idempotency_key)

    async def get_company(self, company_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/companies/{company_id}")

    async def create_connection(
        self, company_id: str, platform_key: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self._request(
            "POST",
            f"/companies/{company_id}/connections",
            json={"platformKey": platform_key},
            key=idempotency_key,
        )

    async def list_connections(self, company_id: str) -> list[dict[str, Any]]:
        """Every connection of a company, across pages."""
        return await self._every_page(f"/companies/{company_id}/connections")

    async def get_mapping_options(self, company_id: str) -> dict[str, Any]:
        """Sync for Expenses' choices: `expenseProvider`, `accounts`, `trackingCategories`,
        `taxRates` (available once Codat has read the company's data)."""
        return await self._request("GET", f"/companies/{company_id}/sync/expenses/mappingOptions")

    async def list_suppliers(self, company_id: str) -> list[dict[str, Any]]:
        """Every supplier in the company's accounting data, across pages."""
        return await self._every_page(f"/companies/{company_id}/data/suppliers")

    async def list_customers(self, company_id: str) -> list[dict[str, Any]]:
        """Every customer in the company's accounting data, across pages."""
        return await self._every_page(f"/companies/{company_id}/data/customers")

    async def get_expenses_config(self, company_id: str) -> dict[str, Any]:
        """The company's default bank account, supplier and customer for expenses."""
        return await self._request("GET", f"/companies/{company_id}/sync/expenses/config")

    async def set_expenses_config(
        self,
        company_id: str,
        *,
        bank_account: str,
        supplier: str,
        customer: str,
        idempotency_key: str,
    ) -> dict[str, Any]:
        """Set the three defaults at once (Codat requires all three)."""
        body = {"bankAccount": {"id": bank_account}, "supplier": {"id": supplier}}
        body["customer"] = {"id": customer}
        return await self._request(
            "POST",
            f"/companies/{company_id}/sync/expenses/config",
            json=body,
            key=idempotency_key,
        )

    async def get_latest_sync_status(self, company_id: str) -> dict[str, Any]:
        """The company's latest expense sync (CompanySyncStatus); 404 when it has none."""
        return await self._request("GET", f"{_syncs(company_id)}/latest/status")

    async def get_sync_status(self, company_id: str, sync_id: str) -> dict[str, Any]:
        """One expense sync's status (CompanySyncStatus)."""
        return await self._request("GET", f"{_syncs(company_id)}/{sync_id}/status")

    async def list_sync_transactions(self, company_id: str, sync_id: str) -> list[dict[str, Any]]:
        """Every transaction of one expense sync with its status and message, across pages."""
        return await self._every_page(f"{_syncs(company_id)}/{sync_id}/transactions")

    async def _every_page(self, path: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = await self._request("GET", path, params={"page": page, "pageSize": 100})
            results = answer.get("results") or []
            found.extend(results)
            total = int(answer.get("totalResults") or 0)
            if not results or len(found) >= total:
                return found
            page += 1

    async def get_connection(self, company_id: str, connection_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/companies/{company_id}/connections/{connection_id}")

    async def unlink_connection(
        self, company_id: str, connection_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            f"/companies/{company_id}/connections/{connection_id}",
            json={"status": "Unlinked"},
            key=idempotency_key,
        )

    async def create_partner_expense_connection(
        self, company_id: str, *, idempotency_key: str
    ) -> dict[str, Any]:
        return await self._request(
            "POST",
            f"/companies/{company_id}/sync/expenses/connections/partnerExpense",
            key=idempotency_key,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if method in ("POST", "PATCH"):
            headers["Idempotency-Key"] = key or str(uuid.uuid4())
        try:
            response = await self.http.request(
                method, path, json=json, params=params, headers=headers
            )
        except httpx.TimeoutException as error:
            raise CodatError(
                f"{method} {path}: no answer from Codat in time ({type(error).__name__})",
                retryable=True,
            ) from error
        except httpx.TransportError as error:
            raise CodatError(
                f"{method} {path}: cannot reach Codat ({type(error).__name__}: {error})",
                retryable=True,
            ) from error
        self._note_rate_limit(response)
        if response.is_success:
            try:
                data = response.json()
            except ValueError:
                raise CodatError(
                    f"{method} {path}: expected a JSON answer from Codat, found "
                    f"{response.text[:100]!r}",
                    status=response.status_code,
                    retryable=True,
                ) from None
            return data if isinstance(data, dict) else {"results": data}
        raise _error(method, path, response)

    def _note_rate_limit(self, response: httpx.Response) -> None:
        self.rate_limit = RateLimit(
            _int(response.headers.get("X-Rate-Limit-Limit")),
            _int(response.headers.get("X-Rate-Limit-Remaining")),
            response.headers.get("X-Rate-Limit-Reset"),
        )


def _syncs(company_id: str) -> str:
    return f"/companies/{company_id}/sync/expenses/syncs"


def _error(method: str, path: str, response: httpx.Response) -> CodatError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    detail = body.get("error") or response.reason_phrase or "no message"
    correlation = body.get("correlationId")
    message = f"{method} {path}: Codat answered {status}: {detail}"
    if correlation:
        message += f" (correlationId {correlation})"
    return CodatError(
        message,
        status=status,
        retryable=status in RETRYABLE_STATUSES or status >= 500,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        correlation_id=correlation,
    )


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: a number of seconds or an HTTP date, at most
    MAX_RETRY_AFTER (a larger value, "inf" or a date in year 9999, would overflow the dates
    computed from it); None when it is neither, or not a number ("nan")."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


# The longest wait a Retry-After is taken for: a day (Codat's quota is a daily one).
MAX_RETRY_AFTER = 24 * 3600.0


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None

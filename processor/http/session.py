"""The dashboard's session cookie: proof that its bearer knew a query-API token.

The cookie never holds the token: it holds when it was issued and an HMAC of that time keyed by
the token, so a leaked cookie does not reveal the token, expires after `LIFETIME` seconds, and
stops working when the token is removed from STATUS_API_TOKEN.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

COOKIE = "codat_expenses_session"
LIFETIME = 12 * 3600


def issue(token: str, now: int) -> str:
    """A cookie value for a session that starts at `now` (Unix seconds)."""
    return f"{now}.{_mac(token, now)}"


def matching_token(presented: str, tokens: Sequence[str]) -> str | None:
    """The configured token equal to `presented`, compared in constant time, or None."""
    found = None
    for token in tokens:
        if hmac.compare_digest(presented.encode(), token.encode()):
            found = token
    return found


def valid(cookie: str | None, tokens: Sequence[str], now: int) -> bool:
    """Whether `cookie` was issued by `issue` for one of `tokens`, and has not expired."""
    if not cookie:
        return False
    issued, _, mac = cookie.partition(".")
    if not (issued.isascii() and issued.isdigit()) or len(issued) > 12:
        return False
    if not 0 <= now - int(issued) <= LIFETIME:
        return False
    matches = [hmac.compare_digest(mac.encode(), _mac(t, int(issued)).encode()) for t in tokens]
    return any(matches)


def _mac(token: str, issued: int) -> str:
    message = f"codat-expenses dashboard session {issued}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()

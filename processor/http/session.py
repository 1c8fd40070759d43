"""The dashboard's session cookie: proof that its bearer knew a query-API token.

The cookie never holds the token: it holds when it was issued and an HMAC of that time and the
token, keyed by a key only the server knows (derived from the webhook signing secrets: random,
Codat's, shared by every instance). So a leaked cookie does not let anyone test guesses at the
token offline; it expires after `LIFETIME` seconds, stops working when its token is removed from
STATUS_API_TOKEN, and when the signing secrets change (a rotation signs everyone out).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache

COOKIE = "codat_expenses_session"
LIFETIME = 12 * 3600


@lru_cache(maxsize=4)
def server_key(secrets: tuple[str, ...]) -> bytes:
    """The sessions' key, from the webhook signing secrets, kept apart from their own use by a
    label of its own (the secrets sign nothing with it)."""
    material = "\n".join(sorted(secrets)).encode()
    return hmac.new(material, b"codat-expenses dashboard session key", hashlib.sha256).digest()


def issue(key: bytes, token: str, now: int) -> str:
    """A cookie value for a session of `token` that starts at `now` (Unix seconds)."""
    return f"{now}.{_mac(key, token, now)}"


def matching_token(presented: str, tokens: Sequence[str]) -> str | None:
    """The configured token equal to `presented`, compared in constant time, or None."""
    found = None
    for token in tokens:
        if hmac.compare_digest(presented.encode(), token.encode()):
            found = token
    return found


def valid(cookie: str | None, key: bytes, tokens: Sequence[str], now: int) -> bool:
    """Whether `cookie` was issued by `issue` with `key` for one of `tokens`, and has not
    expired."""
    if not cookie:
        return False
    issued, _, mac = cookie.partition(".")
    if not (issued.isascii() and issued.isdigit()) or len(issued) > 12:
        return False
    if not 0 <= now - int(issued) <= LIFETIME:
        return False
    presented = mac.encode()
    matches = [hmac.compare_digest(presented, _mac(key, t, int(issued)).encode()) for t in tokens]
    return any(matches)


def _mac(key: bytes, token: str, issued: int) -> str:
    message = f"codat-expenses dashboard session {issued} {token}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()

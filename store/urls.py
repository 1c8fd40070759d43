"""Database URLs in messages: never with their password."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """The URL with the password of its user part and any `password=` parameter masked."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _redact_query(re.sub(r"(://[^/@:]*):[^/]*@", rf"\1:{MASK}@", url))
    if password is None:  # as written (urlunsplit would drop an empty `//` or `?`)
        return _redact_query(url)
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}:{MASK}@{host}"
    return _redact_query(urlunsplit(parts._replace(netloc=netloc)))


def _redact_query(url: str) -> str:
    return re.sub(r"(?i)(password=)[^&\s]*", rf"\1{MASK}", url)


def scrub(message: str, url: str) -> str:
    """A driver's message with the URL's secrets masked, should the driver have echoed them."""
    message = message.replace(url, redact_url(url))
    for secret in _secrets(url):
        message = message.replace(secret, MASK)
    return message


def _secrets(url: str) -> list[str]:
    found = re.findall(r"(?i)password=([^&\s]+)", url)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found.append(password)
    # Both the form written in the URL and the decoded one the driver may print.
    return sorted({s for p in found for s in (p, unquote(p)) if s}, key=len, reverse=True)

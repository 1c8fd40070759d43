"""Log output: one formatter for our loggers and third-party ones, as JSON lines or text.

The code logs with the standard library (`logging.getLogger(__name__)`), the facts of a line in
`extra={...}`; one formatter renders every record, ours and uvicorn's, httpx's or psycopg's
alike: `LOG_FORMAT=json` (the default when stderr is not a terminal: one JSON object per line,
for a log pipeline; `JsonLines`, lean, as `serve` writes a line per webhook) or `text` (the
default on a terminal; structlog's ProcessorFormatter). `LOG_LEVEL` sets the
level (INFO by default; `-v` is DEBUG). Whatever a line holds, a last step masks what looks like
a secret: signing secrets, signatures, bearer tokens, API keys in Basic auth, URL passwords.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Third-party loggers that say one line per request or connection at INFO: quiet unless DEBUG.
NOISY = ("httpx", "httpcore", "uvicorn.access", "psycopg.pool", "hpack")

MASK = "***"
# Each kind of secret: text that any match contains (most values hold none of it, and looking
# for it is 5 times cheaper than a search), and the pattern.
_SECRETS = (
    (("whsec_",), re.compile(r"whsec_[A-Za-z0-9+/=]+")),  # webhook signing secrets
    (("v1,",), re.compile(r"\bv1,[A-Za-z0-9+/]{20,}={0,2}")),  # webhook signatures
    (
        ("Bearer ", "Basic "),
        re.compile(r"\b((?:Bearer|Basic) )[A-Za-z0-9._~+/=-]{8,}"),  # Authorization values
    ),
    (("=",), re.compile(r"(?i)(password=)[^&\s]+")),
    (("://",), re.compile(r"(://[^/@:\s]*:)[^/@\s]+(@)")),  # the password of a URL
)


class LogConfigError(ValueError):
    """LOG_FORMAT or LOG_LEVEL holds something else than one of its values."""


def configure_logs(
    environ: Mapping[str, str] | None = None,
    *,
    verbose: bool = False,
    stream: TextIO | None = None,
) -> str:
    """Send every logger's records through one handler on `stream` (stderr); the format used."""
    env = os.environ if environ is None else environ
    out = stream or sys.stderr
    fmt = _choice(env, "LOG_FORMAT", FORMATS, "text" if out.isatty() else "json")
    level = "DEBUG" if verbose else _choice(env, "LOG_LEVEL", LEVELS, "INFO")
    # No line shows the thread, process or multiprocessing name: not gathered for every record
    # (the logging HOWTO's "Optimization").
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return fmt


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of every line: JSON objects or `time level logger: message key=value`."""
    if fmt == "json":
        return JsonLines()
    # Imported here: it costs every command 0.1 s of start-up, and only text lines use it.
    import structlog

    processors: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        _masked,
        _text,
    ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=processors,
    )


# The attributes every LogRecord has: the others came in `extra` and are the line's facts.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's message again, in colour
}


class JsonLines(logging.Formatter):
    """One JSON object per record: level, logger, the facts of `extra`, timestamp (UTC, ISO
    8601), message, and the traceback if there is one; every text masked (`mask`).

    Written for `serve`, which logs a line per webhook: 6 us a line, where structlog's chain
    (pre-chain, processors, renderer) took 26 us, a tenth of a webhook's whole cost."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name}
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                line[key] = mask(value) if isinstance(value, str) else value
        line["timestamp"] = _timestamp(record.created)
        line["message"] = mask(record.getMessage())
        if record.exc_info:
            line["exception"] = mask(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = mask(record.exc_text)
        if record.stack_info:
            line["stack"] = mask(self.formatStack(record.stack_info))
        return _JSON.encode(line)


def _unencodable(value: object) -> str:
    """What JSON cannot hold, as its repr (masked too)."""
    return mask(repr(value))


_JSON = json.JSONEncoder(default=_unencodable)
_second: list[Any] = [None, ""]  # the last second formatted, and its text


def _timestamp(created: float) -> str:
    """`created` as 2026-12-07T20:27:46.126949Z; the date and time of a second formatted once
    (strftime is most of the cost)."""
    whole = int(created)
    if _second[0] != whole:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((created - whole) * 1_000_000):06d}Z"


def mask(text: str) -> str:
    """`text` with anything that looks like a secret replaced by ***."""
    # A log line has about eight texts to mask: trying the five substitutions on each took
    # 18 us per text, looking for each pattern's text first takes 0.3 us.
    for needles, pattern in _SECRETS:
        for needle in needles:
            if needle in text:
                text = pattern.sub(_REPLACEMENTS[pattern], text)
                break
    return text


def _replacement(pattern: re.Pattern[str]) -> str:
    """The mask, keeping what the pattern's groups hold around the secret."""
    return "".join([r"\1", MASK, r"\2"][: 1 + pattern.groups] if pattern.groups else [MASK])


_REPLACEMENTS = {pattern: _replacement(pattern) for _, pattern in _SECRETS}


def _masked(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Every text masked; uvicorn's `color_message` (the message again, in colour) dropped."""
    return {
        key: mask(value) if isinstance(value, str) else value
        for key, value in event.items()
        if key != "color_message"
    }


def _text(_: Any, __: str, event: dict[str, Any]) -> str:
    """`time LEVEL logger: message key=value ...`, then the traceback if there is one."""
    fields = dict(event)
    head = (
        f"{fields.pop('timestamp', '')} {str(fields.pop('level', '')).upper()} "
        f"{fields.pop('logger', '')}: {fields.pop('event', '')}"
    )
    trace = fields.pop("exception", None)
    tail = "".join(f" {key}={value}" for key, value in fields.items())
    return head + tail + (f"\n{trace}" if trace else "")


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = raw.upper() if name == "LOG_LEVEL" else raw.lower()
    if value not in allowed:
        raise LogConfigError(
            f"Config {name!r} must be one of {', '.join(allowed)}, found {raw[:40]!r}."
        )
    return value

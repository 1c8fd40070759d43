"""Configuration, read once from an injectable mapping (the environment by default)."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from store import StoreError, check_url, describe_url, sqlite_path

N = TypeVar("N", int, float)
T = TypeVar("T")
_KINDS = {int: "an integer", float: "a number"}

DEFAULT_BASE_URL = "https://api.codat.io"
DEFAULT_DATABASE_URL = "sqlite:///processor.db"


class ConfigError(Exception):
    """Missing or malformed settings; each message names its variable."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Everything the processor reads from its environment."""

    api_key: str = ""
    base_url: str = DEFAULT_BASE_URL
    webhook_secrets: tuple[str, ...] = ()
    database_url: str = DEFAULT_DATABASE_URL
    status_tokens: tuple[str, ...] = ()
    # None: METRICS_TOKEN is unset, and /metrics takes the query API's tokens.
    metrics_tokens: tuple[str, ...] | None = None
    port: int = 8000
    max_body_bytes: int = 256 * 1024
    codat_timeout: float = 10.0
    retry_initial: float = 0.5
    retry_max: float = 60.0
    retry_horizon: float = 24 * 3600.0
    reconcile_interval: float = 15 * 60.0
    worker_concurrency: int = 8
    # Helper processes of a full replay: 0 chooses (one per CPU, for a large store), 1 none.
    replay_processes: int = 0
    busy_timeout: float = 5.0
    pool_size: int = 4
    connect_timeout: float = 30.0
    rejection_window: float = 600.0
    rejection_threshold: int = 5
    # A configured company whose expenses have not synced for this long is `silent`.
    sync_silent_after: float = 7 * 86400.0
    # The dashboard lists a company as stuck after this long in pending_auth, or in linked.
    stuck_pending_auth: float = 24 * 3600.0
    stuck_linked: float = 600.0

    @property
    def database_path(self) -> Path:
        """The SQLite file of `database_url`."""
        return sqlite_path(self.database_url)

    @property
    def database(self) -> str:
        """Where the store lives, for messages (never the password)."""
        return describe_url(self.database_url)


def database_url(url: str) -> str:
    """A `DATABASE_URL` a store backend can open; ConfigError naming the variable if not."""
    try:
        return check_url(url)
    except StoreError as error:
        raise ConfigError(f"Config 'DATABASE_URL': {error}.") from None


SERVE_REQUIRES = ("CODAT_API_KEY", "CODAT_WEBHOOK_SECRET")


class _Problems:
    """Collects every bad variable, so one run reports them all."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, read: Callable[[], T], fallback: T) -> T:
        try:
            return read()
        except ConfigError as error:
            self.messages.extend(error.problems)
            return fallback


def load(
    environ: Mapping[str, str] | None = None, *, require: tuple[str, ...] = SERVE_REQUIRES
) -> Settings:
    """Read settings; `require` names the variables the command cannot do without.

    Raises one ConfigError listing every missing or malformed variable.
    """
    env = os.environ if environ is None else environ
    problems = _Problems()
    for name in require:
        if not env.get(name, "").strip():
            problems.messages.append(f"Config {name!r} is missing, and has no default.")
    secrets = _split(env.get("CODAT_WEBHOOK_SECRET", ""))
    problems.check(lambda: check_webhook_secrets(secrets), list[str]())

    def number(name: str, default: N, kind: type[N], low: float, high: float) -> N:
        return problems.check(lambda: _number(env, name, default, kind, low, high), default)

    settings = Settings(
        api_key=env.get("CODAT_API_KEY", "").strip(),
        base_url=problems.check(lambda: _base_url(env), DEFAULT_BASE_URL),
        webhook_secrets=tuple(secrets),
        database_url=problems.check(
            lambda: database_url(env.get("DATABASE_URL", DEFAULT_DATABASE_URL).strip()),
            DEFAULT_DATABASE_URL,
        ),
        status_tokens=tuple(_split(env.get("STATUS_API_TOKEN", ""))),
        metrics_tokens=tuple(_split(env["METRICS_TOKEN"])) if "METRICS_TOKEN" in env else None,
        port=number("PORT", 8000, int, 1, 65535),
        max_body_bytes=number("WEBHOOK_MAX_BODY_BYTES", 256 * 1024, int, 1024, 64 << 20),
        codat_timeout=number("CODAT_TIMEOUT_SECONDS", 10.0, float, 0.01, 600),
        retry_initial=number("RETRY_INITIAL_SECONDS", 0.5, float, 0.001, 3600),
        retry_max=number("RETRY_MAX_SECONDS", 60.0, float, 0.001, 86400),
        retry_horizon=number("RETRY_HORIZON_SECONDS", 86400.0, float, 0.1, 30 * 86400),
        reconcile_interval=number("RECONCILE_INTERVAL_SECONDS", 900.0, float, 0, 7 * 86400),
        worker_concurrency=number("WORKER_CONCURRENCY", 8, int, 1, 256),
        replay_processes=number("REPLAY_PROCESSES", 0, int, 0, 64),
        busy_timeout=number("DATABASE_BUSY_TIMEOUT_SECONDS", 5.0, float, 0.01, 60),
        pool_size=number("DATABASE_POOL_SIZE", 4, int, 1, 100),
        connect_timeout=number("DATABASE_CONNECT_TIMEOUT_SECONDS", 30.0, float, 0, 3600),
        rejection_window=number("WEBHOOK_REJECTION_WINDOW_SECONDS", 600.0, float, 1, 86400),
        rejection_threshold=number("WEBHOOK_REJECTION_THRESHOLD", 5, int, 1, 100_000),
        sync_silent_after=number("SYNC_SILENT_AFTER_SECONDS", 7 * 86400.0, float, 60, 365 * 86400),
        stuck_pending_auth=number(
            "STUCK_PENDING_AUTH_SECONDS", 24 * 3600.0, float, 60, 365 * 86400
        ),
        stuck_linked=number("STUCK_LINKED_SECONDS", 600.0, float, 10, 30 * 86400),
    )
    if problems.messages:
        raise ConfigError(*problems.messages)
    return settings


def _base_url(env: Mapping[str, str]) -> str:
    base_url = env.get("CODAT_BASE_URL", DEFAULT_BASE_URL).strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", base_url):
        raise ConfigError(
            f"Config 'CODAT_BASE_URL' must be an http(s) URL such as {DEFAULT_BASE_URL}, "
            f"found {base_url!r}."
        )
    return base_url


def check_webhook_secrets(secrets: Sequence[str]) -> list[str]:
    """Every `whsec_<base64>` secret checked; raises naming CODAT_WEBHOOK_SECRET if one is not."""
    for secret in secrets:
        _check_secret(secret)
    return list(secrets)


def _split(value: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", value.strip()) if part]


def _check_secret(secret: str) -> None:
    body = secret.removeprefix("whsec_")
    try:
        # Padded or not, as svix reads it.
        unpadded = body.removesuffix("==").removesuffix("=")
        decoded = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not secret.startswith("whsec_") or not decoded:
        # Never any key material: only what is wrong with it.
        found = (
            f"one of {len(secret)} characters whose part after whsec_ is not base64"
            if secret.startswith("whsec_")
            else f"one of {len(secret)} characters without the whsec_ prefix"
        )
        raise ConfigError(
            "Config 'CODAT_WEBHOOK_SECRET' must hold whsec_<base64> secrets separated by spaces "
            f"or commas, found {found}."
        )


def _number(
    env: Mapping[str, str], name: str, default: N, kind: type[N], low: float, high: float
) -> N:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(
            f"Config {name!r} must be {_KINDS[kind]} between {low} and {high}, found {raw!r}."
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"Config {name!r} must be between {low} and {high}, found {raw!r}.")
    return value


def describe(settings: Settings, env: Mapping[str, str], *, version: str) -> str:
    """The start-up line of `serve`: what it runs with, never a secret or a password."""
    if settings.database_url.startswith("sqlite:"):
        database = f"database {settings.database_path.resolve()}"
    else:
        database = f"database: {settings.database}, pool of {settings.pool_size}"
    if not env.get("DATABASE_URL", "").strip():
        database += (
            " (DATABASE_URL is not set: using ./processor.db, which must be on a persistent disk)"
        )
    count = len(settings.webhook_secrets)
    sweep = (
        f"reconciliation every {settings.reconcile_interval:g} s"
        if settings.reconcile_interval > 0
        else "reconciliation off"
    )
    return (
        f"codat-expenses {version}: {database}; Codat at {settings.base_url}; "
        f"{count} webhook secret{'' if count == 1 else 's'}; "
        f"query API {'on' if settings.status_tokens else 'off (STATUS_API_TOKEN unset)'}; {sweep}"
    )

"""Configuration, read once from an injectable mapping (the environment by default)."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

N = TypeVar("N", int, float)

DEFAULT_BASE_URL = "https://api.codat.io"
DEFAULT_DATABASE_URL = "sqlite:///processor.db"


class ConfigError(Exception):
    """A missing or malformed setting; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the processor reads from its environment."""

    api_key: str = ""
    base_url: str = DEFAULT_BASE_URL
    webhook_secrets: tuple[str, ...] = ()
    database_path: Path = Path("processor.db")
    status_tokens: tuple[str, ...] = ()
    port: int = 8000
    max_body_bytes: int = 256 * 1024
    codat_timeout: float = 10.0
    retry_initial: float = 0.5
    retry_max: float = 60.0
    retry_horizon: float = 24 * 3600.0
    reconcile_interval: float = 15 * 60.0
    worker_concurrency: int = 8
    busy_timeout: float = 5.0


def database_path(url: str) -> Path:
    """`sqlite:///relative.db` or `sqlite:////absolute.db` to a path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(
            "Config 'DATABASE_URL' must look like sqlite:///relative/path.db or "
            f"sqlite:////absolute/path.db, found {url!r}."
        )
    return Path(url[len(prefix) :])


SERVE_REQUIRES = ("CODAT_API_KEY", "CODAT_WEBHOOK_SECRET")


def load(
    environ: Mapping[str, str] | None = None, *, require: tuple[str, ...] = SERVE_REQUIRES
) -> Settings:
    """Read settings; `require` names the variables the command cannot do without."""
    env = os.environ if environ is None else environ
    api_key = env.get("CODAT_API_KEY", "").strip()
    secrets = _split(env.get("CODAT_WEBHOOK_SECRET", ""))
    for name in require:
        if not env.get(name, "").strip():
            raise ConfigError(f"Config {name!r} is missing, and has no default.")
    for secret in secrets:
        _check_secret(secret)
    base_url = env.get("CODAT_BASE_URL", DEFAULT_BASE_URL).strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", base_url):
        raise ConfigError(
            f"Config 'CODAT_BASE_URL' must be an http(s) URL such as {DEFAULT_BASE_URL}, "
            f"found {base_url!r}."
        )
    return Settings(
        api_key=api_key,
        base_url=base_url,
        webhook_secrets=tuple(secrets),
        database_path=database_path(env.get("DATABASE_URL", DEFAULT_DATABASE_URL).strip()),
        status_tokens=tuple(_split(env.get("STATUS_API_TOKEN", ""))),
        port=_number(env, "PORT", 8000, int, 1, 65535),
        max_body_bytes=_number(env, "WEBHOOK_MAX_BODY_BYTES", 256 * 1024, int, 1024, 64 << 20),
        codat_timeout=_number(env, "CODAT_TIMEOUT_SECONDS", 10.0, float, 0.01, 600),
        retry_initial=_number(env, "RETRY_INITIAL_SECONDS", 0.5, float, 0.001, 3600),
        retry_max=_number(env, "RETRY_MAX_SECONDS", 60.0, float, 0.001, 86400),
        retry_horizon=_number(env, "RETRY_HORIZON_SECONDS", 86400.0, float, 0.1, 30 * 86400),
        reconcile_interval=_number(env, "RECONCILE_INTERVAL_SECONDS", 900.0, float, 0, 7 * 86400),
        worker_concurrency=_number(env, "WORKER_CONCURRENCY", 8, int, 1, 256),
        busy_timeout=_number(env, "DATABASE_BUSY_TIMEOUT_SECONDS", 5.0, float, 0.01, 60),
    )


def _split(value: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", value.strip()) if part]


def _check_secret(secret: str) -> None:
    body = secret.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(body + "==", validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not secret.startswith("whsec_") or not decoded:
        shown = secret[:6] + "..." if len(secret) > 6 else secret
        raise ConfigError(
            "Config 'CODAT_WEBHOOK_SECRET' must hold whsec_<base64> secrets separated by spaces "
            f"or commas, found one starting {shown!r}."
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
            f"Config {name!r} must be a {kind.__name__} between {low} and {high}, found {raw!r}."
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"Config {name!r} must be between {low} and {high}, found {raw!r}.")
    return value

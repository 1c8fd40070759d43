"""Configuration: every bad variable named at once, each one's own message, the defaults, the
webhook secrets svix can use, and the start-up line of `serve` (which never shows a secret).

`processor.config.load` reads an injected mapping; the command line is run as a real
`python -m processor` process with exactly the environment under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from svix.webhooks import Webhook

from processor import config
from processor.config import ConfigError, Settings
from processor.intake.signature import Verifier
from processor.sandbox.sender import generate_secret, new_message_id
from tests.support import API_KEY, TOKEN, free_port, wait_for

SECRET = generate_secret()
NOWHERE = "http://127.0.0.1:9"
VARIABLES = (
    "CODAT_API_KEY",
    "CODAT_BASE_URL",
    "CODAT_WEBHOOK_SECRET",
    "DATABASE_URL",
    "STATUS_API_TOKEN",
    "PORT",
    "WEBHOOK_MAX_BODY_BYTES",
    "CODAT_TIMEOUT_SECONDS",
    "RETRY_INITIAL_SECONDS",
    "RETRY_MAX_SECONDS",
    "RETRY_HORIZON_SECONDS",
    "WORKER_CONCURRENCY",
    "RECONCILE_INTERVAL_SECONDS",
    "DATABASE_BUSY_TIMEOUT_SECONDS",
    "DATABASE_POOL_SIZE",
    "DATABASE_CONNECT_TIMEOUT_SECONDS",
    "WEBHOOK_REJECTION_WINDOW_SECONDS",
    "WEBHOOK_REJECTION_THRESHOLD",
    "SYNC_SILENT_AFTER_SECONDS",
    "STUCK_PENDING_AUTH_SECONDS",
    "STUCK_LINKED_SECONDS",
)
# (variable, Settings field, kind, lowest accepted, highest accepted)
NUMBERS = (
    ("PORT", "port", int, 1, 65535),
    ("WEBHOOK_MAX_BODY_BYTES", "max_body_bytes", int, 1024, 64 << 20),
    ("CODAT_TIMEOUT_SECONDS", "codat_timeout", float, 0.01, 600),
    ("RETRY_INITIAL_SECONDS", "retry_initial", float, 0.001, 3600),
    ("RETRY_MAX_SECONDS", "retry_max", float, 0.001, 86400),
    ("RETRY_HORIZON_SECONDS", "retry_horizon", float, 0.1, 30 * 86400),
    ("RECONCILE_INTERVAL_SECONDS", "reconcile_interval", float, 0, 7 * 86400),
    ("WORKER_CONCURRENCY", "worker_concurrency", int, 1, 256),
    ("DATABASE_BUSY_TIMEOUT_SECONDS", "busy_timeout", float, 0.01, 60),
    ("DATABASE_POOL_SIZE", "pool_size", int, 1, 100),
    ("DATABASE_CONNECT_TIMEOUT_SECONDS", "connect_timeout", float, 0, 3600),
    ("WEBHOOK_REJECTION_WINDOW_SECONDS", "rejection_window", float, 1, 86400),
    ("WEBHOOK_REJECTION_THRESHOLD", "rejection_threshold", int, 1, 100_000),
    ("SYNC_SILENT_AFTER_SECONDS", "sync_silent_after", float, 60, 365 * 86400),
    ("STUCK_PENDING_AUTH_SECONDS", "stuck_pending_auth", float, 60, 365 * 86400),
    ("STUCK_LINKED_SECONDS", "stuck_linked", float, 10, 30 * 86400),
)
SEVERAL_BAD = {
    "PORT": "x",
    "RETRY_MAX_SECONDS": "-1",
    "DATABASE_URL": "mysql://db.internal:3306/expenses",
    "CODAT_WEBHOOK_SECRET": "not-a-signing-secret-at-all",
    # CODAT_API_KEY: missing
}


def minimal(**extra: str) -> dict[str, str]:
    """The two variables `serve` requires, well-formed, plus `extra`."""
    return {"CODAT_API_KEY": API_KEY, "CODAT_WEBHOOK_SECRET": SECRET, **extra}


def problem(environ: dict[str, str], **kwargs: tuple[str, ...]) -> str:
    """The one problem `load` reports for this environment."""
    with pytest.raises(ConfigError) as raised:
        config.load(environ, **kwargs)
    [message] = raised.value.problems
    assert str(raised.value) == message
    return message


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any of the processor's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return {**env, **extra}


# -- several problems at once ---------------------------------------------------------------------


def test_every_bad_variable_is_reported_in_one_error() -> None:
    with pytest.raises(ConfigError) as raised:
        config.load(SEVERAL_BAD)
    problems = raised.value.problems
    assert isinstance(problems, tuple)
    assert len(problems) == 5, problems
    assert str(raised.value).splitlines() == list(problems)

    def about(name: str) -> str:
        [message] = [p for p in problems if p.startswith(f"Config '{name}'")]
        return message

    assert "missing" in about("CODAT_API_KEY")
    assert "'x'" in about("PORT") and "an integer" in about("PORT")
    assert "'-1'" in about("RETRY_MAX_SECONDS")
    assert "'mysql://db.internal:3306/expenses'" in about("DATABASE_URL")
    assert "sqlite:///" in about("DATABASE_URL")
    assert "postgresql://" in about("DATABASE_URL")
    assert "without the whsec_ prefix" in about("CODAT_WEBHOOK_SECRET"), about(
        "CODAT_WEBHOOK_SECRET"
    )
    assert SEVERAL_BAD["CODAT_WEBHOOK_SECRET"] not in str(raised.value)


def test_serve_with_several_bad_variables_names_each_and_exits_2_before_binding(
    tmp_path: Path,
) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "processor", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_environ(**SEVERAL_BAD),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 5, done.stderr
    names = sorted(line.split("'")[1] for line in lines)
    assert names == sorted([*SEVERAL_BAD, "CODAT_API_KEY"]), done.stderr
    for line in lines:
        assert line.startswith("codat-expenses: Config '"), line
    assert SEVERAL_BAD["CODAT_WEBHOOK_SECRET"] not in done.stderr
    assert "Uvicorn running" not in done.stderr and done.stdout == ""
    assert list(tmp_path.iterdir()) == [], "nothing may be created before the checks"


# -- one problem at a time -----------------------------------------------------------------------


@pytest.mark.parametrize("name", config.SERVE_REQUIRES)
@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_required_variable_missing_or_blank(name: str, value: str | None) -> None:
    environ = minimal()
    if value is None:
        del environ[name]
    else:
        environ[name] = value
    message = problem(environ)
    assert message == f"Config {name!r} is missing, and has no default."
    # Commands that do not need it load without it.
    assert config.load(environ, require=()).port == 8000


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("api.codat.io", "api.codat.io"),
        ("ftp://api.codat.io", "ftp://api.codat.io"),
        ("https://", "https:"),
        ("http:// spaced.example", "http:// spaced.example"),
        ("", ""),
        (" ", ""),
    ],
)
def test_codat_base_url_must_be_http_or_https(value: str, shown: str) -> None:
    message = problem(minimal(CODAT_BASE_URL=value))
    assert message == (
        "Config 'CODAT_BASE_URL' must be an http(s) URL such as https://api.codat.io, "
        f"found {shown!r}."
    ), message


@pytest.mark.parametrize("value", ["http://127.0.0.1:8100/", "https://api.codat.io"])
def test_codat_base_url_accepted_without_its_trailing_slash(value: str) -> None:
    assert config.load(minimal(CODAT_BASE_URL=value)).base_url == value.rstrip("/")


@pytest.mark.parametrize(
    "value",
    [
        "mysql://user@db/expenses",
        "postgresql://",
        "sqlite://relative.db",
        "sqlite:///",
        "processor.db",
        "/var/lib/processor.db",
        "",
    ],
)
def test_database_url_must_name_a_backend(value: str) -> None:
    message = problem(minimal(DATABASE_URL=value))
    assert message.startswith(
        "Config 'DATABASE_URL': expected a database URL like sqlite:///relative/path.db, "
        "sqlite:////absolute/path.db or postgresql://"
    ), message
    assert f"found {value!r}" in message, message


@pytest.mark.parametrize(
    "value",
    [
        "postgres://user@db/expenses",
        "postgresql://app:s3cretpw@db.internal:5432/x?sslmode=require&application_name=codat",
        "postgresql:///expenses?host=/var/run/postgresql",
    ],
)
def test_database_url_may_name_a_postgresql_database(value: str) -> None:
    settings = config.load(minimal(DATABASE_URL=value))
    # Passed through as given, query parameters and all, to the driver.
    assert settings.database_url == value
    assert settings.database.startswith("PostgreSQL database "), settings.database
    assert "s3cretpw" not in config.describe(settings, {"DATABASE_URL": value}, version="1")


def test_the_start_up_line_names_the_postgresql_server_not_its_password() -> None:
    url = "postgresql://app:s3cretpw@db.internal:5433/expenses?sslmode=require"
    settings = config.load(minimal(DATABASE_URL=url, DATABASE_POOL_SIZE="7"))
    line = config.describe(settings, {"DATABASE_URL": url}, version="1.2")
    assert "database: PostgreSQL database 'expenses' on db.internal:5433, pool of 7;" in line
    assert "s3cretpw" not in line and "persistent disk" not in line, line


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("sqlite:///processor.db", Path("processor.db")),
        ("sqlite:///data/x.db", Path("data/x.db")),
        ("sqlite:////var/lib/codat/x.db", Path("/var/lib/codat/x.db")),
    ],
)
def test_database_url_relative_and_absolute(value: str, path: Path) -> None:
    assert config.load(minimal(DATABASE_URL=value)).database_path == path


@pytest.mark.parametrize(("name", "field", "kind", "low", "high"), NUMBERS)
def test_each_number_must_be_a_number(
    name: str, field: str, kind: type, low: float, high: float
) -> None:
    noun = "an integer" if kind is int else "a number"
    bad = ["x", "ten", "1e", "--1"] + (["1.5", "8.0"] if kind is int else [])
    for value in bad:
        message = problem(minimal(**{name: value}))
        assert message == (
            f"Config {name!r} must be {noun} between {low} and {high}, found {value!r}."
        ), message


@pytest.mark.parametrize(("name", "field", "kind", "low", "high"), NUMBERS)
def test_each_number_must_be_in_range(
    name: str, field: str, kind: type, low: float, high: float
) -> None:
    step = 1 if kind is int else low / 2 or 0.5
    for value in (kind(low - step), kind(high + step), kind(-1), kind(high * 10 + 1)):
        message = problem(minimal(**{name: str(value)}))
        assert message == (
            f"Config {name!r} must be between {low} and {high}, found {str(value)!r}."
        ), message
    # Both ends are accepted, and land in their setting.
    for value in (kind(low), kind(high)):
        settings = config.load(minimal(**{name: f" {value} "}))
        assert getattr(settings, field) == value, (name, value, settings)
        assert type(getattr(settings, field)) is kind


def test_not_a_number_and_infinity_are_out_of_range() -> None:
    for value in ("nan", "inf", "-inf"):
        message = problem(minimal(CODAT_TIMEOUT_SECONDS=value))
        assert message.startswith("Config 'CODAT_TIMEOUT_SECONDS' must be between"), message


def test_defaults_when_unset_or_blank() -> None:
    expected = Settings(
        api_key=API_KEY,
        base_url="https://api.codat.io",
        webhook_secrets=(SECRET,),
        database_url="sqlite:///processor.db",
        status_tokens=(),
        port=8000,
        max_body_bytes=262144,
        codat_timeout=10.0,
        retry_initial=0.5,
        retry_max=60.0,
        retry_horizon=86400.0,
        reconcile_interval=900.0,
        worker_concurrency=8,
        busy_timeout=5.0,
        rejection_window=600.0,
        rejection_threshold=5,
        sync_silent_after=604800.0,
        stuck_pending_auth=86400.0,
        stuck_linked=600.0,
    )
    assert config.load(minimal()) == expected
    blanks = {name: " " for name, *_ in NUMBERS}
    assert config.load(minimal(**blanks, STATUS_API_TOKEN="")) == expected
    # Nothing is required of commands that only read.
    assert config.load({}, require=()) == Settings()
    assert Settings().port == 8000 and Settings().reconcile_interval == 900.0


def test_lists_are_split_on_spaces_and_commas() -> None:
    other = generate_secret()
    settings = config.load(
        minimal(CODAT_WEBHOOK_SECRET=f" {SECRET}, {other} ", STATUS_API_TOKEN="a,b  c")
    )
    assert settings.webhook_secrets == (SECRET, other)
    assert settings.status_tokens == ("a", "b", "c")


# -- webhook secrets, as svix reads them ----------------------------------------------------------


def svix_headers(key: bytes, body: bytes) -> dict[str, str]:
    """Headers signed by hand, per the Svix scheme, with the raw key bytes."""
    message_id, stamp = new_message_id(), str(int(time.time()))
    digest = hmac.new(key, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


@pytest.mark.parametrize("length", [1, 2, 3, 22, 23, 24, 32])
@pytest.mark.parametrize("padded", [True, False])
def test_padded_and_unpadded_secrets_are_accepted_as_svix_reads_them(
    length: int, padded: bool
) -> None:
    key = os.urandom(length)
    encoded = base64.b64encode(key).decode()
    secret = "whsec_" + (encoded if padded else encoded.rstrip("="))
    settings = config.load(minimal(CODAT_WEBHOOK_SECRET=secret))
    assert settings.webhook_secrets == (secret,)

    body = b'{"eventType": "company.created"}'
    headers = svix_headers(key, body)
    # svix decodes the secret to exactly the key, so a message signed with the key verifies.
    Webhook(secret).verify(body, headers)
    assert (
        Verifier(settings.webhook_secrets).verify(body, headers).message_id
        == (headers["webhook-id"])
    )


KEY_BASE64 = "Q2FkZW5jZS1vZi10aGUtc2lnbmluZy1rZXk="


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_",
        "whsec_a",
        "whsec_abcde",
        KEY_BASE64,  # base64 without the prefix
        "WHSEC_" + KEY_BASE64,
        "whsec_" + "!" * 32,  # not base64
        "whsec_abcd-_efgh",  # url-safe alphabet: svix would silently drop the - and _
        "whsec_ab=cd=",
    ],
)
def test_malformed_secrets_are_refused_without_showing_them(secret: str) -> None:
    message = problem(minimal(CODAT_WEBHOOK_SECRET=f"{SECRET} {secret}"))
    assert message.startswith("Config 'CODAT_WEBHOOK_SECRET' must hold whsec_<base64>"), message
    if len(secret) > len("whsec_"):
        assert secret not in message, message
    assert SECRET not in message, message
    assert SECRET.removeprefix("whsec_") not in message, message


@pytest.mark.parametrize("secret", ["hunter", "whsec_@@@@", "abcdefghijklmnopqrstuvwxyz012345"])
def test_a_refused_secret_shows_no_key_material(secret: str) -> None:
    message = problem(minimal(CODAT_WEBHOOK_SECRET=secret))
    assert f"of {len(secret)} characters" in message, message
    key = secret.removeprefix("whsec_")
    for start in range(len(key) - 3):
        assert key[start : start + 4] not in message, message


def test_a_malformed_database_url_never_shows_its_password() -> None:
    message = problem(minimal(DATABASE_URL="mysql://app:s3cretpw@db.internal/x"))
    assert "s3cretpw" not in message and "mysql://app:***@db.internal/x" in message, message


# -- the start-up line ----------------------------------------------------------------------------


def startup_line(tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    """Start `serve` in tmp_path, wait for its start-up line, stop it: (line, whole log)."""
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "processor", "serve", "--port", str(free_port())],
            cwd=tmp_path,
            env=clean_environ(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def line() -> str:
            if process.poll() is not None:
                raise AssertionError(f"serve exited {process.returncode}: {log_path.read_text()}")
            found = [ln for ln in log_path.read_text().splitlines() if "codat-expenses " in ln]
            return found[0] if found else ""

        found = wait_for(line, timeout=20, what="serve's start-up line")
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return found, log_path.read_text()


def test_serve_start_up_line_without_database_url(tmp_path: Path) -> None:
    line, log = startup_line(
        tmp_path,
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_WEBHOOK_SECRET": SECRET,
            "CODAT_BASE_URL": NOWHERE,
            "STATUS_API_TOKEN": TOKEN,
            "RECONCILE_INTERVAL_SECONDS": "120",
        },
    )
    version = metadata.version("codat-expenses")
    assert f"codat-expenses {version}: " in line, line
    database = (tmp_path / "processor.db").resolve()
    assert f"database {database} " in line, line
    assert "DATABASE_URL is not set: using ./processor.db" in line, line
    assert "persistent disk" in line, line
    assert f"Codat at {NOWHERE};" in line, line
    assert "1 webhook secret;" in line, line
    assert "query API on;" in line, line
    assert "reconciliation every 120 s" in line, line
    for secret in (API_KEY, SECRET, SECRET.removeprefix("whsec_"), TOKEN):
        assert secret not in log, secret
    assert database.exists()


def test_serve_start_up_line_with_database_url_and_a_rotation(tmp_path: Path) -> None:
    other = generate_secret()
    database = tmp_path / "data" / "store.db"
    database.parent.mkdir()
    line, log = startup_line(
        tmp_path,
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_WEBHOOK_SECRET": f"{SECRET},{other}",
            "CODAT_BASE_URL": NOWHERE,
            "DATABASE_URL": "sqlite:///data/store.db",
            "RECONCILE_INTERVAL_SECONDS": "0",
        },
    )
    assert f"database {database.resolve()};" in line, line
    assert "DATABASE_URL is not set" not in line and "persistent disk" not in line, line
    assert "2 webhook secrets;" in line, line
    assert "query API off" in line, line
    assert "reconciliation off" in line, line
    for secret in (API_KEY, SECRET, other, SECRET.removeprefix("whsec_")):
        assert secret not in log, secret

"""The log formatter: JSON lines or text, the facts of `extra` as fields, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from processor.logs import LogConfigError, configure_logs
from processor.sandbox.sender import generate_secret


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(fmt: str, message: str, *args: object, **extra: object) -> str:
    out = io.StringIO()
    configure_logs({"LOG_FORMAT": fmt}, stream=out)
    logging.getLogger("processor.test").warning(message, *args, extra=extra)
    return out.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_a_json_line_holds_the_message_and_the_facts() -> None:
    line = json.loads(emit("json", "webhook %s: %s", "msg_1", "stored", outcome="stored"))
    assert line["message"] == "webhook msg_1: stored"
    assert (line["level"], line["logger"], line["outcome"]) == (
        "warning",
        "processor.test",
        "stored",
    )
    assert line["timestamp"].endswith("Z")


@pytest.mark.usefixtures("restore_logging")
def test_a_text_line_reads_like_a_log_line() -> None:
    text = emit("text", "company %s: %s -> %s", "c1", "linked", "ready", to_state="ready")
    assert text.rstrip().endswith(
        "WARNING processor.test: company c1: linked -> ready to_state=ready"
    )


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_whatever_a_line_holds_secrets_are_masked(fmt: str) -> None:
    secret = generate_secret()
    signature = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
    written = emit(
        fmt,
        "oops %s %s",
        secret,
        "Authorization: Bearer abcdefgh12345678",
        url="postgresql://app:hunter2hunter2@db.internal:5432/x?password=other-secret",
        header=f"webhook-signature: {signature}",
        basic="Basic dGVzdC1hcGkta2V5LWFiY2RlZg==",
    )
    for leaked in (
        secret,
        secret.removeprefix("whsec_"),
        "abcdefgh12345678",
        "hunter2hunter2",
        "other-secret",
        signature,
        "dGVzdC1hcGkta2V5LWFiY2RlZg==",
    ):
        assert leaked not in written, (leaked, written)
    assert "postgresql://app:***@db.internal:5432/x" in written
    assert "Bearer ***" in written


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=", "c2VjcmV0LXNlY3JldC1zZWNyZXQ="),
        ("sig v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", "K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9"),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("Basic dGVzdC1hcGkta2V5LWFiY2RlZg==", "dGVzdC1hcGkta2V5LWFiY2RlZg=="),
        ("dsn host=db PASSWORD=other-secret", "other-secret"),
        ("postgresql://app:hunter2hunter2@db:5432/x", "hunter2hunter2"),
    ],
)
def test_each_kind_of_secret_is_masked_alone_in_a_value(value: str, secret: str) -> None:
    """A value holding one secret and nothing else that looks like one (the masking looks for
    any secret once before trying each kind)."""
    for fmt in ("json", "text"):
        written = emit(fmt, "plain message", field=value)
        assert secret not in written and "***" in written, written


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("name", "value"), [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "LOUD"), ("LOG_FORMAT", "JSONL")]
)
def test_a_bad_setting_names_the_variable_and_what_it_accepts(name: str, value: str) -> None:
    with pytest.raises(LogConfigError) as raised:
        configure_logs({name: value}, stream=io.StringIO())
    message = str(raised.value)
    assert message.startswith(f"Config {name!r} must be one of ") and repr(value) in message


@pytest.mark.usefixtures("restore_logging")
def test_a_json_line_holds_the_traceback_and_any_fact_as_text() -> None:
    """An exception's traceback is the line's `exception` (masked like the rest); a fact JSON
    cannot hold is written as its repr; the record's own attributes are not facts."""
    out = io.StringIO()
    configure_logs({"LOG_FORMAT": "json"}, stream=out)
    secret = generate_secret()
    try:
        raise ValueError(f"bad secret {secret}")
    except ValueError:
        logging.getLogger("processor.test").exception(
            "failed", extra={"when": {1, 2}, "count": 3, "nothing": None}
        )
    line = json.loads(out.getvalue())
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad secret ***" in line["exception"] and secret not in out.getvalue()
    assert (line["when"], line["count"], line["nothing"]) == ("{1, 2}", 3, None)
    assert (line["message"], line["level"]) == ("failed", "error")
    assert not {"args", "msg", "pathname", "lineno", "exc_info", "created"} & set(line)

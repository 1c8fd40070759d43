"""Hostile input against the running app: never a 5xx, never stored, and it keeps serving."""

from __future__ import annotations

import base64
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from processor.sandbox.sender import generate_secret, new_message_id, sign_headers
from processor.sandbox.webhook_bodies import encode, utc_now
from tests.support import API_KEY, Serve, ServeThread, assert_error, event_count, events

SECRET = generate_secret()
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_database_url: str) -> Iterator[Serve]:
    """`serve` on each backend in turn (`module_database_url`), shared by the module's tests."""
    database = tmp_path_factory.mktemp("hostile") / "processor.db"
    env = {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": "http://127.0.0.1:9",
        "CODAT_WEBHOOK_SECRET": SECRET,
    }
    with ServeThread(database, env, database_url=module_database_url) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Serve) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


# -- helpers ---------------------------------------------------------------------------------------


def rate_limit_reset(**extra: Any) -> dict[str, Any]:
    # A notice with no company and no lasting effect (a `reached` one would pause the
    # non-urgent Codat calls, and /healthz would say so).
    return {
        "id": str(uuid.uuid4()),
        "eventType": "client.rateLimit.reset",
        "generatedDate": utc_now(),
        "payload": {"dailyQuota": 1000, "quotaRemaining": 1000},
        **extra,
    }


def signed(raw: bytes, message_id: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return dict(sign_headers(SECRET, message_id or new_message_id(), raw, **kwargs))


def send(http: httpx.Client, raw: bytes, headers: dict[str, Any]) -> httpx.Response:
    return http.post("/webhooks/codat", content=raw, headers=headers)


def assert_not_stored(server: Serve, before: int, *ids: str) -> None:
    assert event_count(server) == before
    for some_id in ids:
        assert events(server, some_id) == []


def assert_still_serving(http: httpx.Client, server: Serve) -> None:
    """A fresh, valid webhook is stored and /healthz is ok."""
    body = rate_limit_reset()
    raw, message_id = encode(body), new_message_id()
    response = send(http, raw, signed(raw, message_id))
    assert response.status_code == 200, response.text
    assert len(events(server, message_id)) == 1
    health = http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


def raw_head(server: Serve, headers: dict[str, str]) -> bytes:
    lines = ["POST /webhooks/codat HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket) -> tuple[int, Any]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the response body"
        rest += chunk
    return int(lines[0].split()[1]), json.loads(rest[:length])


# -- forged and mangled signatures -----------------------------------------------------------------


def test_replayed_signature_with_a_new_body_is_401_and_not_stored(
    http: httpx.Client, server: Serve
) -> None:
    genuine = rate_limit_reset()
    raw, message_id = encode(genuine), new_message_id()
    headers = signed(raw, message_id)
    assert send(http, raw, headers).status_code == 200
    forged = rate_limit_reset()
    before = event_count(server)
    response = send(http, encode(forged), headers)
    assert_error(response, 401, "no signature in webhook-signature matches")
    assert_not_stored(server, before, forged["id"])
    assert events(server, message_id)[0].deliveries == 1  # not even counted as a redelivery


def test_v1a_only_signature_is_401_and_not_stored(http: httpx.Client, server: Serve) -> None:
    body, before = rate_limit_reset(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
    assert_error(send(http, raw, headers), 401, "expected at least one 'v1,' signature")
    assert_not_stored(server, before, message_id, body["id"])


def test_empty_signature_header_is_400_and_not_stored(http: httpx.Client, server: Serve) -> None:
    body, before = rate_limit_reset(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id)
    headers["webhook-signature"] = ""
    assert_error(send(http, raw, headers), 400, "missing header 'webhook-signature'")
    assert_not_stored(server, before, message_id, body["id"])


@pytest.mark.parametrize(
    ("count", "expected"),
    [(10_000, "under 8192 characters"), (100, "at most 64 signatures")],
    ids=["10000-signatures", "100-short-signatures"],
)
def test_many_signatures_in_one_header_are_refused_before_any_is_checked(
    http: httpx.Client, server: Serve, count: int, expected: str
) -> None:
    """The header carries the genuine signature too: had any entry been checked, it would match
    and the webhook would be stored. The 400 naming the header's length or count shows it was
    refused on its shape alone. No wall-clock bound (machine load would decide it): the client's
    10 s timeout is the only one, and only a hang crosses it."""
    body, before = rate_limit_reset(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id)
    decoy = "v1," + base64.b64encode(b"\0" * 32).decode() if count > 100 else "v1,AA=="
    headers["webhook-signature"] = " ".join([decoy] * (count - 1) + [headers["webhook-signature"]])
    assert_error(send(http, raw, headers), 400, expected)
    assert_not_stored(server, before, message_id, body["id"])


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_100_kb_header_value_is_400_and_the_server_keeps_serving(
    http: httpx.Client, server: Serve, name: str
) -> None:
    body, before = rate_limit_reset(), event_count(server)
    raw = encode(body)
    headers = signed(raw)
    headers[name] = headers[name][:3] + "1" * 100_000
    assert_error(send(http, raw, headers), 400, f"expected header '{name}' under 8192 characters")
    assert_not_stored(server, before, body["id"])
    assert_still_serving(http, server)


# -- hostile bodies, correctly signed --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "a\x00b", "eventType": "client.rateLimit.reset"}',
        b'{"id": "nul-after", "eventType": "client.rateLimit.reset"}\x00',
        b"\x00",
    ],
    ids=["inside-a-string", "after-the-object", "only-nul"],
)
def test_nul_bytes_in_the_body_are_400_and_not_stored(
    http: httpx.Client, server: Serve, raw: bytes
) -> None:
    before, message_id = event_count(server), new_message_id()
    response = send(http, raw, signed(raw, message_id))
    assert_error(response, 400, "expected a JSON object, found invalid JSON")
    assert_not_stored(server, before, message_id, "nul-after")


@pytest.mark.parametrize("opener", ["[", '{"a":'], ids=["arrays", "objects"])
def test_json_nested_10000_levels_deep_is_400_and_not_stored(
    http: httpx.Client, server: Serve, opener: str
) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (
        '{"eventType": "x", "payload": ' + opener * 10_000 + "1" + closer * 10_000 + "}"
    ).encode()
    before, message_id = event_count(server), new_message_id()
    response = send(http, raw, signed(raw, message_id))
    assert_error(response, 400, "expected a JSON object nested at most 64 levels deep")
    assert_not_stored(server, before, message_id)
    assert_still_serving(http, server)


def test_duplicate_json_keys_store_the_last_value(http: httpx.Client, server: Serve) -> None:
    """Python's json module keeps the last of duplicate keys; the event is stored under it."""
    first, last = f"first-{uuid.uuid4()}", f"last-{uuid.uuid4()}"
    raw = (
        f'{{"id": "{first}", "eventType": "company.created", '
        f'"eventType": "client.rateLimit.reset", "payload": {{}}, "id": "{last}"}}'
    ).encode()
    message_id = new_message_id()
    response = send(http, raw, signed(raw, message_id))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "messageId": message_id}
    (stored,) = events(server, message_id)
    assert (stored.event_id, stored.event_type) == (last, "client.rateLimit.reset")
    assert events(server, first) == []


def test_lone_surrogate_in_a_signed_body_is_stored(http: httpx.Client, server: Serve) -> None:
    """`\\ud800` is valid JSON escaping but not encodable as UTF-8 text for SQLite.

    A signed JSON object is stored (README: signed but unexpected bodies are stored as ignored),
    its id made storable; never a 5xx, never refused.
    """
    raw = b'{"id": "\\ud800", "eventType": "client.rateLimit.reset", "payload": {}}'
    message_id = new_message_id()
    response = send(http, raw, signed(raw, message_id))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "messageId": message_id}
    (stored,) = events(server, message_id)
    assert stored.outcome == "ignored"
    assert stored.event_id == "\ufffd"  # U+FFFD, from codat.connections.clean
    assert_still_serving(http, server)


@pytest.mark.parametrize("date", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_generated_date_out_of_range_is_stored_like_any_unreadable_date(
    http: httpx.Client, server: Serve, date: str
) -> None:
    """processor/intake/bodies.py: an unreadable generatedDate falls back to the webhook
    timestamp (of the first delivery: a redelivery, signed later, changes nothing); never a 5xx."""
    body = rate_limit_reset(generatedDate=date)
    raw, message_id = encode(body), new_message_id()
    first = int(time.time()) - 60
    response = send(http, raw, signed(raw, message_id, timestamp=first))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "messageId": message_id}
    again = send(http, raw, signed(raw, message_id, timestamp=first + 30))
    assert again.json() == {"status": "duplicate", "messageId": message_id}
    (stored,) = events(server, body["id"])
    # processor/clock.py's form: UTC, seven fractional digits (all zero: whole seconds), Z.
    assert stored.generated_date == time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(first))
    assert stored.deliveries == 2


# -- how the body arrives --------------------------------------------------------------------------


def test_streamed_body_without_content_length_over_the_limit_is_413(
    http: httpx.Client, server: Serve
) -> None:
    chunk, chunks = b" " * 16384, LIMIT // 16384 + 4
    raw = b"{" + chunk * chunks + b"}"
    before, message_id = event_count(server), new_message_id()
    headers = signed(raw, message_id)

    def stream() -> Iterator[bytes]:
        yield b"{"
        for _ in range(chunks):
            yield chunk
        yield b"}"

    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post("/webhooks/codat", content=stream(), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, f"expected a body of at most {LIMIT} bytes", "more than that")
    assert_not_stored(server, before, message_id)
    assert_still_serving(http, server)


def test_slow_body_does_not_hold_up_other_webhooks(http: httpx.Client, server: Serve) -> None:
    """One sender trickles its body in four pieces; after each piece, before the next is sent,
    another webhook is answered and stored, and the slow one is neither answered nor stored.

    No clock: had the others waited for the slow body they could not be answered at all before
    its next piece (the client gives up after 10 s), so their answers show they were not held up.
    """
    slow_body = rate_limit_reset()
    slow_raw, slow_id = encode(slow_body), new_message_id()
    head = raw_head(server, {**signed(slow_raw, slow_id), "Content-Length": str(len(slow_raw))})
    size = -(-len(slow_raw) // 4)
    pieces = [slow_raw[start : start + size] for start in range(0, len(slow_raw), size)]
    assert len(pieces) == 4
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        for piece in pieces:
            sock.sendall(piece)
            if piece is pieces[-1]:
                break
            other = rate_limit_reset()
            other_raw, other_id = encode(other), new_message_id()
            response = send(http, other_raw, signed(other_raw, other_id))
            assert response.json() == {"status": "stored", "messageId": other_id}
            assert len(events(server, other_id)) == 1
            assert events(server, slow_id) == []
            unanswered, _, _ = select.select([sock], [], [], 0)
            assert unanswered == [], "the slow webhook was answered before its whole body came"
        status, answer = read_response(sock)
    assert (status, answer) == (200, {"status": "stored", "messageId": slow_id})
    assert len(events(server, slow_body["id"])) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_wrong_method_is_405_json(http: httpx.Client, server: Serve, method: str) -> None:
    body, before = rate_limit_reset(), event_count(server)
    raw = encode(body)
    response = http.request(method, "/webhooks/codat", content=raw, headers=signed(raw))
    assert_error(response, 405, f"{method} is not allowed on /webhooks/codat")
    assert response.headers["allow"] == "POST"
    assert_not_stored(server, before, body["id"])


def test_content_type_is_not_checked_because_the_signature_covers_the_raw_bytes(
    http: httpx.Client, server: Serve
) -> None:
    """A signed JSON object sent as text/plain is accepted; unsigned as text/plain is not."""
    body = rate_limit_reset()
    raw, message_id = encode(body), new_message_id()
    headers = {**signed(raw, message_id), "content-type": "text/plain; charset=latin-1"}
    response = send(http, raw, headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "messageId": message_id}
    assert len(events(server, body["id"])) == 1

    forged, before = rate_limit_reset(), event_count(server)
    forged_raw = encode(forged)
    headers = {**sign_headers(generate_secret(), new_message_id(), forged_raw)}
    headers["content-type"] = "text/plain"
    assert_error(send(http, forged_raw, headers), 401, "no signature in webhook-signature matches")
    assert_not_stored(server, before, forged["id"])


@pytest.mark.parametrize(
    "rule_type",
    [["Sync Completed"], {"Sync Failed": 1}, 7, None],
    ids=["a-list", "an-object", "a-number", "null"],
)
def test_a_legacy_rule_type_that_is_no_text_is_stored_as_ignored(
    http: httpx.Client, server: Serve, rule_type: Any
) -> None:
    """A signed legacy body whose RuleType is no text (a list cannot be looked up among the
    known rules) is stored as ignored, never a 5xx that Codat would retry for 28 hours."""
    alert = f"alert-{uuid.uuid4()}"
    raw, message_id = encode({"RuleType": rule_type, "AlertId": alert}), new_message_id()
    response = send(http, raw, signed(raw, message_id))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "messageId": message_id}
    (stored,) = events(server, message_id)
    assert stored.outcome == "ignored"
    assert stored.event_id == alert
    assert_still_serving(http, server)


def test_escaped_nul_characters_are_stored_made_storable(http: httpx.Client, server: Serve) -> None:
    """`\\u0000` is valid JSON escaping, and PostgreSQL's text cannot hold it: the ids and the
    event type are stored with U+FFFD in its place (as a lone surrogate is), on either backend;
    never a 503 that every redelivery would get again."""
    tag = uuid.uuid4().hex[:8]
    raw = (
        f'{{"id": "evt\\u0000{tag}", "eventType": "company.created\\u0000", '
        f'"generatedDate": "{utc_now()}", '
        f'"payload": {{"id": "co\\u0000{tag}", "name": "Nul\\u0000 Ltd"}}}}'
    ).encode()
    message_id = new_message_id()
    response = send(http, raw, signed(raw, message_id))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "messageId": message_id}
    (stored,) = events(server, message_id)
    assert stored.event_id == f"evt\ufffd{tag}"
    assert stored.event_type == "company.created\ufffd"
    assert stored.company_id == f"co\ufffd{tag}"
    assert_still_serving(http, server)

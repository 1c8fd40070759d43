"""Signed webhook intake over real loopback HTTP: what is accepted, refused, and stored."""

from __future__ import annotations

import base64
import json
import math
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from processor.sandbox.sender import generate_secret, new_message_id, sign_headers
from processor.sandbox.webhook_bodies import (
    company_event,
    connection_event,
    encode,
    new_company,
    new_connection,
    utc_now,
)
from store import StoredEvent
from tests.support import API_KEY, Serve, ServeThread, assert_error, event_count, events, wait_for

OLD_SECRET = generate_secret()
NEW_SECRET = generate_secret()
LIMIT = 256 * 1024
NOWHERE = "http://127.0.0.1:9"  # no Codat call happens unless a company becomes Linked


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    database = tmp_path_factory.mktemp("signatures") / "processor.db"
    env = {
        "CODAT_API_KEY": API_KEY,
        "CODAT_BASE_URL": NOWHERE,
        # A rotation in progress, comma-separated: both secrets must verify.
        "CODAT_WEBHOOK_SECRET": f"{OLD_SECRET},{NEW_SECRET}",
    }
    with ServeThread(database, env) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Serve) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


# -- helpers ---------------------------------------------------------------------------------------


def company_created() -> dict[str, Any]:
    return company_event("company.created", new_company("Sawayn Group"))


def rate_limit_reached() -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "eventType": "client.rateLimit.reached",
        "generatedDate": utc_now(),
        "payload": {"dailyQuota": 1000, "quotaRemaining": 0},
    }


def send(
    http: httpx.Client,
    raw: bytes,
    headers: dict[str, Any],
) -> httpx.Response:
    return http.post("/webhooks/codat", content=raw, headers=headers)


def signed(
    raw: bytes, secret: str = NEW_SECRET, message_id: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    return dict(sign_headers(secret, message_id or new_message_id(), raw, **kwargs))


def assert_not_stored(server: Serve, before: int, *ids: str) -> None:
    assert event_count(server) == before
    for some_id in ids:
        assert events(server, some_id) == []


def assert_stored_once(
    response: httpx.Response, server: Serve, message_id: str, event_id: str
) -> StoredEvent:
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "messageId": message_id}
    found = events(server, message_id)
    assert len(found) == 1
    assert found[0].event_id == event_id
    assert found[0].deliveries == 1
    return found[0]


# -- accepted --------------------------------------------------------------------------------------


def test_valid_signature_with_webhook_headers_is_stored_once(
    http: httpx.Client, server: Serve
) -> None:
    body = company_created()
    raw, message_id = encode(body), new_message_id()
    response = send(http, raw, signed(raw, message_id=message_id))
    stored = assert_stored_once(response, server, message_id, body["id"])
    assert stored.event_type == "company.created"
    assert stored.company_id == body["payload"]["id"]


def test_valid_signature_with_svix_headers_is_stored_once(
    http: httpx.Client, server: Serve
) -> None:
    body = company_created()
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id, prefix="svix")
    assert not any(name.startswith("webhook-") for name in headers)
    assert_stored_once(send(http, raw, headers), server, message_id, body["id"])


@pytest.mark.parametrize("secret", [OLD_SECRET, NEW_SECRET], ids=["old", "new"])
def test_either_secret_of_a_rotation_is_accepted(
    http: httpx.Client, server: Serve, secret: str
) -> None:
    body = rate_limit_reached()
    raw, message_id = encode(body), new_message_id()
    response = send(http, raw, signed(raw, secret, message_id))
    assert_stored_once(response, server, message_id, body["id"])


def test_one_matching_signature_among_several_is_enough(http: httpx.Client, server: Serve) -> None:
    body = rate_limit_reached()
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id)
    other = generate_secret()
    decoy = sign_headers(other, message_id, raw)["webhook-signature"]
    noise = "v1," + base64.b64encode(secrets.token_bytes(32)).decode()
    headers["webhook-signature"] = f"{decoy} {noise} v2,{noise[3:]} {headers['webhook-signature']}"
    assert_stored_once(send(http, raw, headers), server, message_id, body["id"])


def test_timestamp_inside_the_tolerance_is_accepted(http: httpx.Client, server: Serve) -> None:
    body = rate_limit_reached()
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id, timestamp=int(time.time()) - 290)
    assert_stored_once(send(http, raw, headers), server, message_id, body["id"])


def test_body_of_exactly_the_limit_is_accepted(http: httpx.Client, server: Serve) -> None:
    body = rate_limit_reached()
    body["padding"] = ""
    body["padding"] = "x" * (LIMIT - len(encode(body)))
    raw, message_id = encode(body), new_message_id()
    assert len(raw) == LIMIT
    assert_stored_once(
        send(http, raw, signed(raw, message_id=message_id)), server, message_id, body["id"]
    )


# -- not authentic: 401 ----------------------------------------------------------------------------


def test_wrong_secret_is_401_and_not_stored(http: httpx.Client, server: Serve) -> None:
    body, before = rate_limit_reached(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    response = send(http, raw, signed(raw, generate_secret(), message_id))
    assert_error(response, 401, "no signature in webhook-signature matches a configured secret")
    assert_not_stored(server, before, message_id, body["id"])


def test_tampered_body_is_401_and_not_stored(http: httpx.Client, server: Serve) -> None:
    body, before = company_created(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id)
    tampered = raw.replace(b"Sawayn Group", b"Sawayn Grouq")
    assert tampered != raw
    assert_error(send(http, tampered, headers), 401, "no signature in webhook-signature matches")
    assert_not_stored(server, before, message_id, body["id"])


def test_stale_timestamp_is_401_and_not_stored(http: httpx.Client, server: Serve) -> None:
    body, before = rate_limit_reached(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id, timestamp=math.floor(time.time()) - 301)
    assert_error(send(http, raw, headers), 401, "in the past", "expected within 300 s")
    assert_not_stored(server, before, message_id, body["id"])


def test_future_timestamp_is_401_and_not_stored(http: httpx.Client, server: Serve) -> None:
    body, before = rate_limit_reached(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id, timestamp=math.ceil(time.time()) + 301)
    assert_error(send(http, raw, headers), 401, "in the future", "expected within 300 s")
    assert_not_stored(server, before, message_id, body["id"])


# -- malformed: 400 --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["id", "timestamp", "signature"])
def test_missing_header_is_400_and_not_stored(http: httpx.Client, server: Serve, name: str) -> None:
    body, before = rate_limit_reached(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id)
    del headers[f"webhook-{name}"]
    assert_error(send(http, raw, headers), 400, f"missing header 'webhook-{name}'", f"svix-{name}")
    assert_not_stored(server, before, message_id, body["id"])


@pytest.mark.parametrize(
    "stamp",
    [
        "soon",
        "-5",
        "1.7e9",
        "17000000000000",  # 14 digits: not Unix seconds of this era
        b"\xb2",  # latin-1 SUPERSCRIPT TWO: str.isdigit() is True for it, int() refuses it
    ],
    ids=["word", "negative", "float", "too-long", "superscript-two"],
)
def test_non_numeric_timestamp_is_400_and_not_stored(
    http: httpx.Client, server: Serve, stamp: str | bytes
) -> None:
    body, before = rate_limit_reached(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id)
    headers["webhook-timestamp"] = stamp
    assert_error(send(http, raw, headers), 400, "expected webhook-timestamp to be Unix seconds")
    assert_not_stored(server, before, message_id, body["id"])


@pytest.mark.parametrize(
    "signature",
    ["garbage", "v1", "v1,", ",abc", "v1,!!!notbase64", "v1,YWJj,YWJj", "v1,abc"],
)
def test_malformed_signature_header_is_400_and_not_stored(
    http: httpx.Client, server: Serve, signature: str
) -> None:
    body, before = rate_limit_reached(), event_count(server)
    raw, message_id = encode(body), new_message_id()
    headers = signed(raw, message_id=message_id)
    headers["webhook-signature"] = signature
    assert_error(send(http, raw, headers), 400, "webhook-signature")
    assert_not_stored(server, before, message_id)


def test_a_bad_base64_entry_beside_a_matching_one_is_400_whatever_the_order(
    http: httpx.Client, server: Serve
) -> None:
    """'v1,abc' passes the entry pattern but is not valid base64 (bad padding).

    The README answers 400 for a malformed header: the whole header is refused, wherever the bad
    entry sits and whichever rotated secret signed the matching one, and nothing is stored.
    """
    for secret in (OLD_SECRET, NEW_SECRET):
        for bad_first in (True, False):
            body, before = rate_limit_reached(), event_count(server)
            raw, message_id = encode(body), new_message_id()
            headers = signed(raw, secret, message_id)
            entries = ["v1,abc", headers["webhook-signature"]]
            if not bad_first:
                entries.reverse()
            headers["webhook-signature"] = " ".join(entries)
            assert_error(
                send(http, raw, headers),
                400,
                "expected base64 after the comma in webhook-signature, found 'v1,abc'",
            )
            assert_not_stored(server, before, message_id, body["id"])


def test_non_utf8_body_signed_correctly_is_400_and_not_stored(
    http: httpx.Client, server: Serve
) -> None:
    raw, before = b'{"id": "caf\xe9", "eventType": "company.created"}', event_count(server)
    message_id = new_message_id()
    response = send(http, raw, signed(raw, message_id=message_id))
    assert_error(response, 400, "expected a UTF-8 body", "offset 11")
    assert_not_stored(server, before, message_id)


@pytest.mark.parametrize(
    ("raw", "found"),
    [
        (b'[{"id": "a", "eventType": "company.created"}]', "found a JSON array"),
        (b'"company.created"', "found a JSON string"),
        (b"42", "found a JSON number"),
        (b"null", "found a JSON null"),
        (b"true", "found a JSON boolean"),
        (b'{"id": "a", "eventType": ', "found invalid JSON"),
        (b"", "found invalid JSON"),
    ],
    ids=["array", "string", "number", "null", "boolean", "truncated", "empty"],
)
def test_signed_body_that_is_not_a_json_object_is_400_and_not_stored(
    http: httpx.Client, server: Serve, raw: bytes, found: str
) -> None:
    before, message_id = event_count(server), new_message_id()
    response = send(http, raw, signed(raw, message_id=message_id))
    assert_error(response, 400, "expected a JSON object", found)
    assert_not_stored(server, before, message_id)


# -- too large: 413 --------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_and_not_stored(http: httpx.Client, server: Serve) -> None:
    body = rate_limit_reached()
    body["padding"] = "x" * LIMIT
    raw, message_id, before = encode(body), new_message_id(), event_count(server)
    response = send(http, raw, signed(raw, message_id=message_id))
    assert_error(response, 413, f"expected a body of at most {LIMIT} bytes", f"{len(raw)} bytes")
    assert_not_stored(server, before, message_id, body["id"])


def test_oversized_content_length_is_refused_before_the_body_is_read(
    server: Serve,
) -> None:
    """Only the headers are sent: the 413 must come from Content-Length alone."""
    before = event_count(server)
    head = (
        "POST /webhooks/codat HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {LIMIT + 1}\r\n"
        f"webhook-id: {new_message_id()}\r\n"
        f"webhook-timestamp: {int(time.time())}\r\n"
        "webhook-signature: v1,AAAA\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode())
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body == {
        "error": f"expected a body of at most {LIMIT} bytes, found {LIMIT + 1} bytes declared"
    }
    assert event_count(server) == before


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {name.lower(): value for name, value in headers.items()}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the response body"
        rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest[:length])


# -- duplicates and what is stored anyway ----------------------------------------------------------


def test_duplicate_delivery_of_one_message_is_acknowledged_and_logged_once(
    http: httpx.Client, server: Serve
) -> None:
    body = company_created()
    raw, message_id = encode(body), new_message_id()
    first = send(http, raw, signed(raw, message_id=message_id))
    # Svix signs each attempt afresh: same id and body, a newer timestamp.
    again = send(http, raw, signed(raw, message_id=message_id, timestamp=int(time.time()) + 1))
    assert first.status_code == again.status_code == 200
    assert first.json() == {"status": "stored", "messageId": message_id}
    assert again.json() == {"status": "duplicate", "messageId": message_id}
    found = events(server, message_id)
    assert len(found) == 1
    assert found[0].deliveries == 2
    # The same row by its event id (compared by seq: the worker may fold it between the reads).
    assert [e.seq for e in events(server, body["id"])] == [found[0].seq]


def test_same_event_under_a_new_message_id_is_a_duplicate_and_not_processed(
    http: httpx.Client, server: Serve
) -> None:
    body = company_created()
    company_id, raw = body["payload"]["id"], encode(body)
    first_id, second_id = new_message_id(), new_message_id()
    assert send(http, raw, signed(raw, message_id=first_id)).json()["status"] == "stored"
    second = send(http, raw, signed(raw, message_id=second_id))
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "messageId": second_id}
    original, duplicate = events(server, body["id"])
    assert (original.message_id, duplicate.message_id) == (first_id, second_id)
    assert duplicate.duplicate_of == original.seq
    assert duplicate.outcome == "duplicate"
    assert duplicate.processed_at is not None  # never handed to the worker
    document = server.wait_state(company_id, "created")
    outcomes = {event["messageId"]: event["outcome"] for event in document["events"]}
    assert outcomes == {first_id: "applied", second_id: "duplicate"}


def test_unknown_event_type_is_stored_and_acknowledged(http: httpx.Client, server: Serve) -> None:
    body = rate_limit_reached()
    raw, message_id = encode(body), new_message_id()
    stored = assert_stored_once(
        send(http, raw, signed(raw, message_id=message_id)), server, message_id, body["id"]
    )
    assert stored.event_type == "client.rateLimit.reached"
    assert stored.company_id is None
    assert stored.outcome == "ignored"


def test_event_for_an_unknown_company_is_stored_and_acknowledged(
    http: httpx.Client, server: Serve
) -> None:
    company = new_company("Never Seen Ltd")
    connection = new_connection(company["id"], "gbol")
    body = connection_event("connection.created", company, connection)
    raw, message_id = encode(body), new_message_id()
    response = send(http, raw, signed(raw, message_id=message_id))
    stored = assert_stored_once(response, server, message_id, body["id"])
    assert stored.company_id == company["id"]
    assert stored.connection_id == connection["id"]
    folded = wait_for(
        lambda: events(server, message_id)[0].outcome, timeout=10, what="the event to be folded"
    )
    assert folded == "applied"

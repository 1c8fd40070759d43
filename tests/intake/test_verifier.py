"""`processor.intake.signature.Verifier` in-process: every error path, its status and
`reason`, and the verdict of the `svix` package's own `Webhook.verify` as the reference on
well-formed cases.

Signatures are real: made with `processor.sandbox.sender.sign_headers` (svix's own signing) or,
for the reference, with `svix.webhooks.Webhook.sign`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from svix.webhooks import Webhook, WebhookVerificationError

from processor.intake.signature import (
    MALFORMED,
    MAX_HEADER_CHARS,
    MAX_SIGNATURES,
    SIGNATURE,
    TIMESTAMP,
    TOLERANCE_SECONDS,
    SignatureError,
    VerifiedMessage,
    Verifier,
)
from processor.sandbox.sender import generate_secret, new_message_id, sign_headers

OLD = generate_secret()
NEW = generate_secret()
OTHER = generate_secret()
BODY = b'{"id":"e1","eventType":"company.created","payload":{"id":"c1","name":"Sawayn"}}'


def signed(
    body: bytes = BODY,
    secret: str | list[str] = NEW,
    *,
    message_id: str = "msg_verifier",
    timestamp: int | None = None,
    prefix: str = "webhook",
) -> dict[str, str]:
    return sign_headers(secret, message_id, body, timestamp=timestamp, prefix=prefix)


def refusal(
    headers: dict[str, str],
    body: bytes = BODY,
    secrets: tuple[str, ...] = (NEW,),
    now: float | None = None,
) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        Verifier(secrets).verify(body, headers, now=now)
    return caught.value


def signature_entry(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,` entry, computed by hand as the Standard Webhooks spec says (bytes, not text)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# -- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
def test_a_valid_signature_is_accepted_with_either_header_prefix(prefix: str) -> None:
    headers = {**signed(prefix=prefix, message_id="msg_ok"), "user-agent": "Svix-Webhooks/1.0"}
    headers["x-forwarded-for"] = "10.0.0.1"
    verified = Verifier([NEW]).verify(BODY, headers)
    assert isinstance(verified, VerifiedMessage)
    assert verified.message_id == "msg_ok"
    assert verified.timestamp == int(headers[f"{prefix}-timestamp"])
    # Only the webhook's own headers and the two descriptive ones are kept with the event.
    assert set(verified.headers) == {
        f"{prefix}-id",
        f"{prefix}-timestamp",
        f"{prefix}-signature",
        "content-type",
        "user-agent",
    }


def test_one_valid_signature_among_several_is_enough_wherever_it_stands() -> None:
    good = signed()["webhook-signature"]
    decoys = [signed(secret=OTHER)["webhook-signature"], "v2," + base64.b64encode(b"x").decode()]
    for position in range(len(decoys) + 1):
        entries = [*decoys]
        entries.insert(position, good)
        headers = {**signed(), "webhook-signature": " ".join(entries)}
        assert Verifier([NEW]).verify(BODY, headers).message_id == "msg_verifier"


def test_entries_separated_by_several_spaces_still_verify() -> None:
    headers = signed(secret=[OTHER, NEW])
    headers["webhook-signature"] = headers["webhook-signature"].replace(" ", "   ")
    assert Verifier([NEW]).verify(BODY, headers).message_id == "msg_verifier"


@pytest.mark.parametrize("signer", [OLD, NEW], ids=["old-secret", "new-secret"])
def test_during_a_rotation_either_secret_verifies(signer: str) -> None:
    verifier = Verifier([OLD, NEW])
    assert verifier.verify(BODY, signed(secret=signer)).message_id == "msg_verifier"
    # And a message signed with both (as Svix does during a rotation) verifies too.
    assert verifier.verify(BODY, signed(secret=[OLD, NEW])).message_id == "msg_verifier"


def test_a_secret_outside_the_rotation_is_refused_as_signature() -> None:
    error = refusal(signed(secret=OTHER), secrets=(OLD, NEW))
    assert (error.status, error.reason) == (401, SIGNATURE)
    assert "no signature in webhook-signature matches a configured secret" in error.message


def test_a_verifier_needs_at_least_one_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Verifier([])


# -- missing and oversized headers -------------------------------------------------------------


@pytest.mark.parametrize("name", ["id", "timestamp", "signature"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_a_missing_header_is_400_malformed_naming_both_spellings(name: str, how: str) -> None:
    headers = signed()
    if how == "absent":
        del headers[f"webhook-{name}"]
    else:
        headers[f"webhook-{name}"] = ""
    error = refusal(headers)
    assert (error.status, error.reason) == (400, MALFORMED)
    assert f"missing header 'webhook-{name}' (or 'svix-{name}')" == error.message


@pytest.mark.parametrize("name", ["id", "timestamp", "signature"])
def test_a_header_over_the_limit_is_400_malformed(name: str) -> None:
    headers = signed()
    headers[f"webhook-{name}"] = "9" * (MAX_HEADER_CHARS + 1)
    error = refusal(headers)
    assert (error.status, error.reason) == (400, MALFORMED)
    assert f"under {MAX_HEADER_CHARS} characters, found {MAX_HEADER_CHARS + 1}" in error.message


# -- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        "soon",
        "-5",
        "1.7e9",
        "1700000000.0",
        " 1700000000",
        "17000000000000",
        "\u00b2",
        "\u0661\u0667\u0660\u0660",
    ],
    ids=[
        "word",
        "negative",
        "exponent",
        "decimal",
        "leading-space",
        "14-digits",
        "superscript-two",
        "arabic-indic-digits",
    ],
)
def test_a_malformed_timestamp_is_400_with_reason_timestamp(stamp: str) -> None:
    headers = {**signed(), "webhook-timestamp": stamp}
    error = refusal(headers)
    assert (error.status, error.reason) == (400, TIMESTAMP)
    assert error.message.startswith("expected webhook-timestamp to be Unix seconds, found ")


@pytest.mark.parametrize(
    ("offset", "direction"),
    [(-(TOLERANCE_SECONDS + 1), "in the past"), (TOLERANCE_SECONDS + 1, "in the future")],
    ids=["too-old", "too-new"],
)
def test_a_timestamp_outside_the_tolerance_of_the_injected_now_is_401_timestamp(
    offset: int, direction: str
) -> None:
    now = 1_700_000_000.0
    headers = signed(timestamp=int(now) + offset)
    error = refusal(headers, now=now)
    assert (error.status, error.reason) == (401, TIMESTAMP)
    assert f"webhook-timestamp is {TOLERANCE_SECONDS + 1} s {direction}" in error.message
    assert f"expected within {TOLERANCE_SECONDS} s" in error.message


def test_the_skew_is_judged_before_the_signature() -> None:
    """A stale message with a forged signature says `timestamp`: the clock is the first thing
    to check, and a replay of an old genuine message is refused whatever its signature."""
    headers = signed(secret=OTHER, timestamp=int(time.time()) - 3600)
    error = refusal(headers)
    assert (error.status, error.reason) == (401, TIMESTAMP)


@pytest.mark.parametrize("offset", [-(TOLERANCE_SECONDS - 5), TOLERANCE_SECONDS - 5])
def test_a_timestamp_inside_the_tolerance_of_the_wall_clock_is_accepted(offset: int) -> None:
    headers = signed(timestamp=int(time.time()) + offset)
    assert Verifier([NEW]).verify(BODY, headers).timestamp == int(headers["webhook-timestamp"])


def test_a_timestamp_inside_the_tolerance_of_the_injected_now_is_accepted() -> None:
    now = 1_700_000_000.0
    headers = signed(timestamp=int(now) - 60)
    assert Verifier([NEW]).verify(BODY, headers, now=now).timestamp == int(now) - 60


# -- malformed signature headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    ["garbage", "v1", "v1,", ",abc", "V1,YWJj", "v1,YWJj,YWJj", "v1;YWJj", "v1,YW!J"],
)
def test_a_malformed_signature_entry_is_400_signature(signature: str) -> None:
    error = refusal({**signed(), "webhook-signature": signature})
    assert (error.status, error.reason) == (400, SIGNATURE)
    assert "expected webhook-signature entries like 'v1,<base64>', found" in error.message


@pytest.mark.parametrize("entry", ["v1,abc", "v1,YWJ", "v1,=YWJj", "v1,A"])
@pytest.mark.parametrize("bad_first", [True, False], ids=["bad-first", "bad-last"])
def test_a_non_base64_entry_is_400_even_beside_a_valid_one(entry: str, bad_first: bool) -> None:
    good = signed()["webhook-signature"]
    entries = [entry, good] if bad_first else [good, entry]
    error = refusal({**signed(), "webhook-signature": " ".join(entries)})
    assert (error.status, error.reason) == (400, SIGNATURE)
    assert f"expected base64 after the comma in webhook-signature, found {entry!r}" in error.message


def test_more_signatures_than_the_limit_are_400_signature() -> None:
    good = signed()["webhook-signature"]
    entries = ["v1,AAAA"] * MAX_SIGNATURES + [good]
    error = refusal({**signed(), "webhook-signature": " ".join(entries)})
    assert (error.status, error.reason) == (400, SIGNATURE)
    assert f"at most {MAX_SIGNATURES} signatures" in error.message
    # Exactly the limit is still read (and the good one found).
    headers = {**signed(), "webhook-signature": " ".join(entries[1:])}
    assert Verifier([NEW]).verify(BODY, headers).message_id == "msg_verifier"


def test_no_v1_entry_at_all_is_401_signature() -> None:
    good = signed()["webhook-signature"]
    for other in ("v1a", "v2"):
        error = refusal({**signed(), "webhook-signature": good.replace("v1,", f"{other},")})
        assert (error.status, error.reason) == (401, SIGNATURE)
        assert "expected at least one 'v1,' signature" in error.message


def test_a_valid_signature_on_a_body_that_is_not_utf8_is_400_malformed() -> None:
    body = b'{"id": "caf\xe9"}'
    headers = signed(body)
    error = refusal(headers, body=body)
    assert (error.status, error.reason) == (400, MALFORMED)
    assert error.message == "expected a UTF-8 body, found an invalid byte at offset 11"


def test_signature_messages_that_quote_the_header_are_flagged_by_their_reason() -> None:
    """The intake logs a refusal's message unless its reason is `signature` (it may quote the
    signature header); every message quoting an entry must therefore carry that reason."""
    quoted = "v1,c2VjcmV0LXNpZ25hdHVyZQ=x"
    error = refusal({**signed(), "webhook-signature": quoted})
    assert quoted in error.message
    assert error.reason == SIGNATURE


# -- the svix package as the reference ---------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    headers: dict[str, str]
    secrets: tuple[str, ...] = (NEW,)


def cases() -> list[Case]:
    now = int(time.time())
    message_id = new_message_id()
    good = signed(message_id=message_id, timestamp=now)
    svix = signed(message_id=message_id, timestamp=now, prefix="svix")
    by_hand = signature_entry(NEW, message_id, now, BODY)

    def with_(**changes: str) -> dict[str, str]:
        return {**good, **{k.replace("_", "-"): v for k, v in changes.items()}}

    return [
        Case("valid", BODY, good),
        Case("valid-svix-headers", BODY, svix),
        Case("valid-by-hand", BODY, with_(webhook_signature=by_hand)),
        Case("empty-body", b"", signed(b"", message_id=message_id, timestamp=now)),
        Case("wrong-secret", BODY, good, (OTHER,)),
        Case("rotation-old-signer", BODY, signed(secret=OLD, timestamp=now), (OLD, NEW)),
        Case("rotation-neither", BODY, signed(secret=OTHER, timestamp=now), (OLD, NEW)),
        Case("tampered-body", BODY.replace(b"Sawayn", b"Sawayn!"), good),
        Case("tampered-id", BODY, with_(webhook_id=message_id + "x")),
        Case("tampered-timestamp", BODY, with_(webhook_timestamp=str(now - 1))),
        Case("too-old", BODY, signed(timestamp=now - TOLERANCE_SECONDS - 30)),
        Case("too-new", BODY, signed(timestamp=now + TOLERANCE_SECONDS + 30)),
        Case("inside-past", BODY, signed(timestamp=now - TOLERANCE_SECONDS + 30)),
        Case("inside-future", BODY, signed(timestamp=now + TOLERANCE_SECONDS - 30)),
        Case("several-one-valid", BODY, with_(webhook_signature=f"v1,AAAA {by_hand} v1,BBBB")),
        Case("v1a-only", BODY, with_(webhook_signature=by_hand.replace("v1,", "v1a,"))),
        Case("v2-and-v1", BODY, with_(webhook_signature=f"v2,AAAA {by_hand}")),
        Case("missing-id", BODY, {k: v for k, v in good.items() if k != "webhook-id"}),
        Case("signed-other-body", BODY, signed(b"{}", message_id=message_id, timestamp=now)),
    ]


def svix_accepts(case: Case) -> bool:
    """The reference: does svix's Webhook.verify accept it with any of the secrets?"""
    for secret in case.secrets:
        try:
            Webhook(secret).verify(case.body, case.headers)
        except WebhookVerificationError:
            continue
        return True
    return False


def ours_accepts(case: Case) -> bool:
    try:
        Verifier(case.secrets).verify(case.body, case.headers)
    except SignatureError:
        return False
    return True


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.name)
def test_the_verdict_matches_svix_webhook_verify(case: Case) -> None:
    expected = svix_accepts(case)
    assert ours_accepts(case) is expected, f"svix says {'valid' if expected else 'invalid'}"


def test_the_reference_cases_cover_both_verdicts() -> None:
    verdicts = [svix_accepts(case) for case in cases()]
    assert verdicts.count(True) >= 6 and verdicts.count(False) >= 8, verdicts


@pytest.mark.parametrize(
    ("name", "body", "change"),
    [
        ("not-utf8", b'{"id": "caf\xe9"}', lambda h: h),
        ("entry-without-comma", BODY, lambda h: {**h, "webhook-signature": "v1"}),
        ("entry-with-two-commas", BODY, lambda h: {**h, "webhook-signature": "v1,YWJj,YWJj"}),
        ("entry-not-base64", BODY, lambda h: {**h, "webhook-signature": "v1,abc"}),
    ],
)
def test_where_svix_raises_an_unexpected_error_we_answer_400(
    name: str, body: bytes, change: Callable[[dict[str, str]], dict[str, str]]
) -> None:
    """svix before 2.9 let ValueError, binascii.Error or UnicodeDecodeError escape on these (a
    500); svix 2.9 refuses the malformed entries and accepts a correctly signed body that is not
    UTF-8 (it verifies bytes as they are). We refuse each with one named 400."""
    headers = change(signed(body))
    try:
        Webhook(NEW).verify(body, headers)
    except Exception:  # WebhookVerificationError, or what older versions let escape
        pass
    else:
        assert name == "not-utf8", f"expected svix to refuse {name}, it accepted it"
    assert refusal(headers, body=body).status == 400


def test_the_injected_now_is_the_only_clock_of_the_skew_check() -> None:
    """Without `now` the wall clock decides: the same message is refused or judged on its
    signature depending on the injected time alone."""
    stamp = int(time.time())
    headers = signed(timestamp=stamp)
    verifier = Verifier([NEW])
    assert verifier.verify(BODY, headers).timestamp == stamp
    assert verifier.verify(BODY, headers, now=stamp + 10).timestamp == stamp
    later = refusal(headers, now=stamp + TOLERANCE_SECONDS + 60)
    earlier = refusal(headers, now=stamp - TOLERANCE_SECONDS - 60)
    assert (later.reason, earlier.reason) == (TIMESTAMP, TIMESTAMP)
    assert "in the past" in later.message and "in the future" in earlier.message


@given(
    message_id=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
    ),
    body=st.text(max_size=300).map(lambda text: text.encode("utf-8")),
    offset=st.integers(min_value=-TOLERANCE_SECONDS + 5, max_value=TOLERANCE_SECONDS - 5),
    tampered=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_the_verifier_agrees_with_svix_on_any_message(
    message_id: str, body: bytes, offset: int, tampered: bool
) -> None:
    """The verifier computes the HMAC itself; svix's `Webhook.verify` is the reference."""
    now = int(time.time())
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(now + offset),
        "webhook-signature": Webhook(NEW).sign(
            message_id, datetime.fromtimestamp(now + offset, UTC), body.decode()
        ),
    }
    sent = body + b" " if tampered else body
    try:
        Webhook(NEW).verify(sent, headers)
        reference = True
    except WebhookVerificationError:
        reference = False
    try:
        Verifier((NEW,)).verify(sent, headers, now=now)
        ours = True
    except SignatureError:
        ours = False
    assert ours == reference == (not tampered)

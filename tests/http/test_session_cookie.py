"""The dashboard's session cookie (processor/http/session.py): it proves its bearer knew a
token without letting anyone who holds it test guesses at the token offline. Its MAC is keyed
by a key derived from the webhook signing secrets, which the cookie's holder does not know."""

from __future__ import annotations

import hashlib
import hmac

from processor.http import session
from processor.sandbox.sender import generate_secret

NOW = 1_765_100_000
TOKEN = "tok_alice"  # a weak token, as operators do choose them


def test_a_cookie_is_valid_for_its_token_and_key_until_it_expires() -> None:
    key = session.server_key((generate_secret(),))
    cookie = session.issue(key, TOKEN, NOW)
    assert session.valid(cookie, key, [TOKEN, "tok_bob"], NOW + 60)
    assert session.valid(cookie, key, [TOKEN], NOW + session.LIFETIME)
    assert not session.valid(cookie, key, [TOKEN], NOW + session.LIFETIME + 1)
    assert not session.valid(cookie, key, ["tok_bob"], NOW + 60), "its token was removed"
    other = session.server_key((generate_secret(),))
    assert not session.valid(cookie, other, [TOKEN], NOW + 60), "the secrets were rotated"


def test_a_leaked_cookie_does_not_confirm_a_guessed_token() -> None:
    """Who holds the cookie knows when it was issued and the message's form: guessing the
    token must not reproduce the MAC without the server's key (it did when the token was the
    key)."""
    cookie = session.issue(session.server_key((generate_secret(),)), TOKEN, NOW)
    issued, _, mac = cookie.partition(".")
    for message in (
        f"codat-expenses dashboard session {issued}",
        f"codat-expenses dashboard session {issued} {TOKEN}",
    ):
        guess = hmac.new(TOKEN.encode(), message.encode(), hashlib.sha256).hexdigest()
        assert guess != mac


def test_the_key_depends_on_the_set_of_secrets_not_their_order() -> None:
    first, second = generate_secret(), generate_secret()
    assert session.server_key((first, second)) == session.server_key((second, first))
    assert session.server_key((first,)) != session.server_key((first, second))

"""Credentials (static users, TURN REST API) and stateless nonces."""

from __future__ import annotations

import base64
import hashlib
import hmac

from nat.stun import long_term_key as nat_long_term_key
from relay.auth import (
    NonceIssuer,
    NonceVerdict,
    first_match,
    long_term_key,
    rest_api_credentials,
    rest_api_password,
    rest_api_username,
    static_users,
)


def test_long_term_key_matches_rfc_and_nat_layer() -> None:
    expected = hashlib.md5(b"user:realm:pass", usedforsecurity=False).digest()
    assert long_term_key("user", "realm", "pass") == expected
    assert nat_long_term_key("user", "realm", "pass") == expected


def test_static_users() -> None:
    lookup = static_users({"alice": "pw"})
    found = lookup("alice", "r")
    assert found is not None and found.identity == "alice"
    assert found.key == long_term_key("alice", "r", "pw")
    assert lookup("mallory", "r") is None


def test_rest_api_password_is_coturns() -> None:
    # coturn: password = base64(hmac-sha1(secret, "expiry:user")).
    username = rest_api_username(1700000000, "peer42")
    assert username == "1700000000:peer42"
    digest = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert rest_api_password(b"s3cret", username) == base64.b64encode(digest).decode()


def test_rest_api_credentials_expire() -> None:
    now = [1000.0]
    lookup = rest_api_credentials(b"s3cret", clock=lambda: now[0])
    username = rest_api_username(2000, "peer42")
    found = lookup(username, "realm")
    assert found is not None and found.identity == "peer42"
    assert found.key == long_term_key(username, "realm", rest_api_password(b"s3cret", username))
    now[0] = 2001.0
    assert lookup(username, "realm") is None
    for bad in ("peer42", "abc:peer", "-5:peer", "9" * 20 + ":peer", ""):
        assert lookup(bad, "realm") is None


def test_first_match() -> None:
    lookup = first_match(static_users({"a": "1"}), static_users({"a": "2", "b": "3"}))
    a, b = lookup("a", "r"), lookup("b", "r")
    assert a is not None and a.key == long_term_key("a", "r", "1")
    assert b is not None and lookup("c", "r") is None


def test_nonces_are_stateless_bound_and_expire() -> None:
    issuer = NonceIssuer(b"k" * 32, lifetime=600)
    client = ("203.0.113.5", 4000)
    nonce = issuer.issue(client, now=100.0)
    assert issuer.verify(nonce, client, 699.0) is NonceVerdict.VALID
    assert issuer.verify(nonce, client, 700.0) is NonceVerdict.STALE
    assert issuer.verify(nonce, ("203.0.113.5", 4001), 101.0) is NonceVerdict.FORGED
    assert NonceIssuer(b"j" * 32).verify(nonce, client, 101.0) is NonceVerdict.FORGED
    expiry, _, mac = nonce.partition("-")
    assert issuer.verify(f"{int(expiry, 16) + 1:x}-{mac}", client, 101.0) is NonceVerdict.FORGED
    for junk in ("", "-", "zz-zz", "1" * 40 + "-ab", "nodash"):
        assert issuer.verify(junk, client, 101.0) is NonceVerdict.FORGED

"""Digest authentication: RFC 7616 / RFC 2617 vectors, stale nonces, nc replay, no enumeration."""
# ruff: noqa: S106, S107  (test credentials, on purpose)

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.digest import (
    Algorithm,
    DigestServer,
    StoredCredentials,
    VerdictKind,
    authorization,
    ha1,
    stored_credentials,
)
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import AuthHeader, parse_auth

# RFC 7616 §3.9.1 (the same request answered with SHA-256 and with MD5).
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    "uri": "/dir/index.html",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (Algorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: Algorithm, expected: str) -> None:
    challenge = AuthHeader(
        "Digest",
        (
            ("realm", RFC7616["realm"]),
            ("nonce", RFC7616["nonce"]),
            ("opaque", RFC7616["opaque"]),
            ("algorithm", algorithm.value),
            ("qop", "auth"),
        ),
    )
    value = authorization(
        challenge,
        method="GET",
        uri=RFC7616["uri"],
        username=RFC7616["username"],
        password=RFC7616["password"],
        cnonce=RFC7616["cnonce"],
    )
    answer = parse_auth(value)
    assert answer.get("response") == expected
    assert answer.get("opaque") == RFC7616["opaque"]
    assert answer.get("nc") == "00000001"


def test_rfc2617_ha1_vector() -> None:
    # RFC 2617 §3.5: HA1 of Mufasa / testrealm@host.com / Circle Of Life.
    assert (
        ha1("Mufasa", "testrealm@host.com", "Circle Of Life", Algorithm.MD5)
        == "939e7578ed9e3c518a452acee763bce9"
    )


SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "gw.example.org"
URI = "sip:gw.example.org"
ALICE = stored_credentials("alice", REALM, "correct horse")


def lookup(username: str) -> StoredCredentials | None:
    return ALICE if username == "alice" else None


def answer(
    server: DigestServer,
    now: float,
    *,
    password: str = "correct horse",
    username: str = "alice",
    algorithm_index: int = 0,
    nc: int = 1,
    challenge_now: float | None = None,
) -> AuthHeader:
    challenge = parse_auth(
        server.challenges(now if challenge_now is None else challenge_now)[algorithm_index]
    )
    return parse_auth(
        authorization(
            challenge,
            method="REGISTER",
            uri=URI,
            username=username,
            password=password,
            cnonce="c0ffee",
            nc=nc,
        )
    )


def test_stored_credentials_hold_no_password() -> None:
    assert "correct horse" not in repr(ALICE)
    assert ALICE.ha1_md5 == ha1("alice", REALM, "correct horse", Algorithm.MD5)
    assert len(ALICE.ha1_sha256) == 64


def test_both_challenges_offered_sha256_first() -> None:
    server = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    first, second = (parse_auth(value) for value in server.challenges(100.0))
    assert (first.get("algorithm"), second.get("algorithm")) == ("SHA-256", "MD5")
    assert first.get("qop") == second.get("qop") == "auth"
    assert first.get("nonce") == second.get("nonce")
    assert first.get("stale") is None


@pytest.mark.parametrize("algorithm_index", [0, 1])
def test_right_password_accepted_with_either_algorithm(algorithm_index: int) -> None:
    server = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    verdict = server.verify(
        answer(server, 100.0, algorithm_index=algorithm_index),
        method="REGISTER",
        lookup=lookup,
        now=101.0,
        request_uri=URI,
    )
    assert (verdict.kind, verdict.username) == (VerdictKind.OK, "alice")


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    server = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    wrong = server.verify(
        answer(server, 100.0, password="nope"), method="REGISTER", lookup=lookup, now=101.0
    )
    unknown = server.verify(
        answer(server, 100.0, username="mallory"), method="REGISTER", lookup=lookup, now=101.0
    )
    assert wrong.kind is unknown.kind is VerdictKind.FAILED
    assert wrong.reason == unknown.reason


def test_expired_nonce_is_stale_not_a_failure_and_forged_nonce_fails() -> None:
    server = DigestServer(REALM, SECRET, nonce_lifetime=60.0, randbytes=random.Random(7).randbytes)
    old = answer(server, 100.0)
    assert server.verify(old, method="REGISTER", lookup=lookup, now=161.0).kind is (
        VerdictKind.STALE
    )
    assert parse_auth(server.challenges(161.0, stale=True)[0]).get("stale") == "true"
    other = DigestServer(
        REALM, b"another secret of 32 bytes......", randbytes=random.Random(7).randbytes
    )
    forged = answer(other, 100.0)
    assert server.verify(forged, method="REGISTER", lookup=lookup, now=101.0).reason == (
        "nonce not issued here"
    )
    # A stale answer with the wrong password is still a failure (no password oracle).
    wrong_old = answer(server, 100.0, password="nope")
    assert server.verify(wrong_old, method="REGISTER", lookup=lookup, now=161.0).kind is (
        VerdictKind.FAILED
    )


def test_nonce_count_must_increase() -> None:
    server = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    first = answer(server, 100.0, nc=1)
    assert server.verify(first, method="REGISTER", lookup=lookup, now=101.0).kind is VerdictKind.OK
    replay = server.verify(first, method="REGISTER", lookup=lookup, now=102.0)
    assert (replay.kind, replay.reason) == (VerdictKind.FAILED, "nonce count replayed")
    later = answer(server, 102.0, nc=2, challenge_now=100.0)
    assert server.verify(later, method="REGISTER", lookup=lookup, now=102.0).kind is VerdictKind.OK


def test_tracked_nonces_are_bounded() -> None:
    server = DigestServer(REALM, SECRET, max_tracked_nonces=8, randbytes=random.Random(7).randbytes)
    for step in range(50):
        now = 100.0 + step
        verdict = server.verify(answer(server, now), method="REGISTER", lookup=lookup, now=now)
        assert verdict.kind is VerdictKind.OK
    assert server.tracked_nonces == 8


def test_method_and_uri_are_bound() -> None:
    server = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    credentials = answer(server, 100.0)
    assert server.verify(credentials, method="INVITE", lookup=lookup, now=101.0).kind is (
        VerdictKind.FAILED
    )
    mismatch = server.verify(
        credentials, method="REGISTER", lookup=lookup, now=101.0, request_uri="sip:elsewhere"
    )
    assert mismatch.reason == "uri mismatch"


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="gw.example.org"',
        'Digest username="alice", realm="gw.example.org"',
        'Digest username="alice", realm="other", nonce="x", uri="sip:a", response="0"',
    ],
)
def test_incomplete_or_foreign_credentials_fail(value: str) -> None:
    server = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    verdict = server.verify(parse_auth(value), method="REGISTER", lookup=lookup, now=1.0)
    assert verdict.kind is VerdictKind.FAILED


def test_token68_credentials_are_a_decode_error() -> None:
    with pytest.raises(SipDecodeError):
        parse_auth("Basic dXNlcjpwYXNz")


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=12))
def test_fuzz_credential_parameters_never_crash(nonce: str, response: str, nc: str) -> None:
    server = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    credentials = AuthHeader(
        "Digest",
        (
            ("username", "alice"),
            ("realm", REALM),
            ("nonce", nonce),
            ("uri", URI),
            ("response", response),
            ("qop", "auth"),
            ("nc", nc),
            ("cnonce", "x"),
        ),
    )
    verdict = server.verify(credentials, method="REGISTER", lookup=lookup, now=1.0)
    assert verdict.kind is VerdictKind.FAILED


def test_offered_algorithms_and_their_order_are_configurable() -> None:
    server = DigestServer(
        REALM, SECRET, randbytes=random.Random(7).randbytes, algorithms=(Algorithm.MD5,)
    )
    (only,) = server.challenges(100.0)
    assert parse_auth(only).get("algorithm") == "MD5"
    full = DigestServer(REALM, SECRET, randbytes=random.Random(7).randbytes)
    sha = answer(full, 100.0, algorithm_index=0)  # a SHA-256 answer to a server that dropped it
    verdict = server.verify(sha, method="REGISTER", lookup=lookup, now=101.0)
    assert verdict.reason in ("algorithm not offered", "nonce not issued here")
    # The same secret: the nonce is authentic, so only the algorithm refuses it.
    same = DigestServer(REALM, SECRET, randbytes=random.Random(8).randbytes)
    sha = answer(same, 100.0, algorithm_index=0)
    assert server.verify(sha, method="REGISTER", lookup=lookup, now=101.0).reason == (
        "algorithm not offered"
    )

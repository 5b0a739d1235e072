"""Login grammar and peer ids as logins."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.directory.names import (
    ClaimedLogin,
    LoginError,
    PeerIdLogin,
    normalise_login,
    parse_login_or_peer_id,
)
from p2pnode.identity import Identity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        (" bob.smith-2 ", "bob.smith-2"),
        ("123", "123"),
        ("18009359935", "18009359935"),
        ("a" * 32, "a" * 32),
    ],
)
def test_valid_logins(text: str, expected: str) -> None:
    assert normalise_login(text) == expected


@pytest.mark.parametrize(
    "text", ["ab", "a" * 33, "al ice", "al_ice", "alice@x", "ålice", "", "a\x00b"]
)
def test_invalid_logins(text: str) -> None:
    with pytest.raises(LoginError):
        normalise_login(text)


def test_peer_id_is_a_login() -> None:
    identity = Identity.generate(bytes(32))
    parsed = parse_login_or_peer_id(identity.peer_id.upper())
    assert parsed == PeerIdLogin(peer_id=identity.peer_id, public_key=identity.public_key)
    assert parse_login_or_peer_id("alice") == ClaimedLogin("alice")
    with pytest.raises(LoginError):
        parse_login_or_peer_id(identity.peer_id[:-1])  # 51 chars: neither


@given(st.text(max_size=60))
def test_login_parse_is_total(text: str) -> None:
    try:
        login = normalise_login(text)
    except LoginError:
        return
    assert normalise_login(login) == login
    assert 3 <= len(login) <= 32

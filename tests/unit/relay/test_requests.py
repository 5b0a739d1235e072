"""The stateless request checks, called directly (the core tests cover them end to end too)."""

from __future__ import annotations

import pytest

from nat.stun import (
    AddressFamily,
    EvenPort,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    StunClass,
    StunMessage,
    StunMethod,
    Username,
    decode_message,
    encode_message,
)
from relay.auth import NonceIssuer, long_term_key, static_users
from relay.messages import TurnErrorCode
from relay.requests import (
    Authenticated,
    AuthFailure,
    address_family,
    allocate_refusal,
    authenticate,
    desired_lifetime,
    has_fingerprint,
)

CLIENT = ("203.0.113.5", 4000)


def message(*attributes: object) -> StunMessage:
    return StunMessage(StunMethod.ALLOCATE, StunClass.REQUEST, b"t" * 12, attributes)  # type: ignore[arg-type]


def test_allocate_refusal() -> None:
    assert allocate_refusal(message(RequestedTransport(17)), AddressFamily.IPV4) is None
    assert allocate_refusal(message(), AddressFamily.IPV4) is TurnErrorCode.BAD_REQUEST
    assert (
        allocate_refusal(
            message(RequestedTransport(17), EvenPort(reserve=True)), AddressFamily.IPV4
        )
        is TurnErrorCode.INSUFFICIENT_CAPACITY
    )


@pytest.mark.parametrize(("asked", "granted"), [(None, 600), (0, 0), (1, 600), (7200, 3600)])
def test_desired_lifetime(asked: int | None, granted: int) -> None:
    request = message() if asked is None else message(Lifetime(asked))
    assert desired_lifetime(request, 600, 3600) == granted


def test_helpers() -> None:
    assert address_family("::1") is AddressFamily.IPV6
    assert address_family("1.2.3.4") is AddressFamily.IPV4
    assert not has_fingerprint(message())


def test_authenticate_order() -> None:
    nonces = NonceIssuer(b"n" * 32)
    lookup = static_users({"alice": "pw"})
    key = long_term_key("alice", "r", "pw")

    def check(request: StunMessage, data: bytes, now: float = 10.0) -> object:
        """Authenticate ``data`` as the server sees it: decoded from the wire."""
        assert decode_message(data).method is request.method
        return authenticate(
            decode_message(data), data, CLIENT, now, realm="r", credentials=lookup, nonces=nonces
        )

    bare = message(RequestedTransport(17))
    assert check(bare, encode_message(bare)) == AuthFailure(TurnErrorCode.UNAUTHENTICATED, True)
    assert check(bare, encode_message(bare, integrity_key=key)) == AuthFailure(
        TurnErrorCode.BAD_REQUEST, False
    )
    nonce = nonces.issue(CLIENT, 0.0)
    full = message(RequestedTransport(17), Username("alice"), Realm("r"), Nonce(nonce))
    good = encode_message(full, integrity_key=key)
    assert check(full, good) == Authenticated("alice", lookup("alice", "r"), False)  # type: ignore[arg-type]
    bad_key = encode_message(full, integrity_key=b"x" * 16)
    assert check(full, bad_key) == AuthFailure(TurnErrorCode.UNAUTHENTICATED, True)
    assert check(full, good, now=10_000.0) == AuthFailure(TurnErrorCode.STALE_NONCE, True)

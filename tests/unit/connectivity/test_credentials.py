"""Credentials RPC: codec totality, issuer policy, sealing, and agreement with relay.auth."""

from __future__ import annotations

import contextlib

import msgpack
import nacl.public
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.connectivity.credentials import (
    MAX_CREDENTIAL_TTL,
    CredentialIssuer,
    CredentialsDecodeError,
    CredentialsError,
    CredentialsReply,
    CredentialStatus,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    open_reply,
    signed_request,
)
from p2pnode.dht import Peer
from p2pnode.identity import Identity
from relay.auth import long_term_key, rest_api_credentials

NOW = 1_800_000_000.0
SECRET = b"s" * 32
SUPERNODE = Identity.generate(bytes([9]) * 32)


def peer(identity: Identity, proven: bool = False) -> Peer:
    """The DHT's view of a sender (``proven`` is not needed: the request signature is)."""
    IDENTITIES[identity.public_key] = identity
    return Peer(identity.public_key, identity.node_id, ("127.0.0.1", 5000), proven, False)


def ask(
    issuer: CredentialIssuer,
    who: Peer,
    ttl: int = 3600,
    *,
    signer: Identity | None = None,
    supernode_key: bytes = SUPERNODE.public_key,
    sent_at: float = NOW,
) -> tuple[CredentialsReply, bytes]:
    """A request signed by ``signer`` (default: the sender's own identity) as the DHT carries it."""
    key = nacl.public.PrivateKey.generate()
    identity = signer or IDENTITIES[who.public_key]
    request = signed_request(identity, supernode_key, bytes(key.public_key), ttl, sent_at)
    request = decode_request(encode_request(request))
    return decode_reply(issuer.handle(request, who, NOW)), bytes(key)


IDENTITIES: dict[bytes, Identity] = {}


def issuer_(**kwargs: object) -> CredentialIssuer:
    return CredentialIssuer(SECRET, "p2pnode", own_key=SUPERNODE.public_key, **kwargs)  # type: ignore[arg-type]


def test_proven_peer_gets_credentials_the_relay_accepts() -> None:
    me = Identity.generate(bytes([5]) * 32)
    issuer = issuer_()
    reply, raw_key = ask(issuer, peer(me), ttl=3600)
    assert reply.status is CredentialStatus.ISSUED, reply.detail
    credentials = open_reply(reply, nacl.public.PrivateKey(raw_key))
    assert credentials.username == f"{int(NOW) + 3600}:{me.peer_id}"
    assert credentials.peer_id == me.peer_id
    assert credentials.realm == "p2pnode"
    # The password never travels in clear.
    assert credentials.password.encode() not in reply.sealed_password
    # relay.auth (the TURN server's lookup) derives the same key and counts the peer id.
    lookup = rest_api_credentials(SECRET, clock=lambda: NOW)
    found = lookup(credentials.username, "p2pnode")
    assert found is not None
    assert found.identity == me.peer_id
    assert found.key == long_term_key(credentials.username, "p2pnode", credentials.password)
    # Expired: the relay refuses them.
    late = rest_api_credentials(SECRET, clock=lambda: NOW + 3601)
    assert late(credentials.username, "p2pnode") is None
    assert issuer.outcomes["issued"] == 1


def test_ttl_is_clamped() -> None:
    issuer = issuer_()
    who = Identity.generate()
    assert issuer.credentials_for(who.public_key, NOW, 10).expires_at == int(NOW) + 60
    big = issuer.credentials_for(who.public_key, NOW, 10**9)
    assert big.expires_at == int(NOW) + MAX_CREDENTIAL_TTL


def test_unproven_requests_are_refused() -> None:
    who, other = Identity.generate(), Identity.generate()
    issuer = issuer_()
    cases = {
        "signed by another key": ask(issuer, peer(who), signer=other)[0],
        "signed for another supernode": ask(issuer, peer(who), supernode_key=other.public_key)[0],
        "stale": ask(issuer, peer(who), sent_at=NOW - 301)[0],
        "from the future": ask(issuer, peer(who), sent_at=NOW + 301)[0],
    }
    for name, reply in cases.items():
        assert reply.status is CredentialStatus.UNPROVEN, name
        assert reply.username == "" and reply.sealed_password == b"", name
    assert ask(issuer, peer(who), sent_at=NOW - 299)[0].status is CredentialStatus.ISSUED
    assert issuer.outcomes == {"unproven": 4, "issued": 1}


def test_unavailable_is_refused_with_the_reason() -> None:
    who = Identity.generate()
    reasons: list[str | None] = ["demoted: reachability lost"]
    issuer = issuer_(unavailable=lambda: reasons[0])
    reply, key = ask(issuer, peer(who))
    assert reply.status is CredentialStatus.UNAVAILABLE
    assert reply.detail == "demoted: reachability lost"
    with pytest.raises(CredentialsError, match="unavailable"):
        open_reply(reply, nacl.public.PrivateKey(key))
    reasons[0] = None
    assert ask(issuer, peer(who))[0].status is CredentialStatus.ISSUED


def test_a_reply_sealed_to_someone_else_does_not_open() -> None:
    issuer = issuer_()
    reply, _ = ask(issuer, peer(Identity.generate()))
    with pytest.raises(CredentialsError, match="does not open"):
        open_reply(reply, nacl.public.PrivateKey.generate())


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        CredentialIssuer(b"short", "r", own_key=SUPERNODE.public_key)


SIG = b"s" * 64


@pytest.mark.parametrize(
    "fields",
    [
        (),
        (1, b"k" * 32, 60, 0),
        (2, b"k" * 32, 60, 0, SIG),
        (1, b"k" * 31, 60, 0, SIG),
        (1, "k" * 32, 60, 0, SIG),
        (1, b"k" * 32, -1, 0, SIG),
        (1, b"k" * 32, MAX_CREDENTIAL_TTL + 1, 0, SIG),
        (True, b"k" * 32, 60, 0, SIG),
        (1, b"k" * 32, 60, -1, SIG),
        (1, b"k" * 32, 60, 0, SIG[:63]),
        (1, b"k" * 32, 60, 0, SIG, 0),
    ],
)
def test_bad_requests(fields: tuple[object, ...]) -> None:
    with pytest.raises(CredentialsDecodeError):
        decode_request(fields)


@pytest.mark.parametrize(
    "fields",
    [
        (),
        (9, "", "", b"", 0, ""),
        (0, "", "", b"x" * 129, 0, ""),
        (0, "", "u" * 201, b"", 0, ""),
        (0, "", "", "", 0, ""),
        (0, "", "", b"", -5, ""),
        (0, "", "", b"", 0, "", 1),
    ],
)
def test_bad_replies(fields: tuple[object, ...]) -> None:
    with pytest.raises(CredentialsDecodeError):
        decode_reply(fields)


values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=40), st.binary(max_size=140)
)


@given(st.lists(values, max_size=8).map(tuple))
def test_property_decoders_are_total(fields: tuple[object, ...]) -> None:
    for decode in (decode_request, decode_reply):
        with contextlib.suppress(CredentialsDecodeError):
            decode(fields)


@given(
    st.sampled_from(CredentialStatus),
    st.text(max_size=50),
    st.text(max_size=80),
    st.binary(max_size=128),
    st.integers(0, 2**40),
    st.text(max_size=50),
)
def test_property_reply_round_trip(
    status: CredentialStatus, detail: str, user: str, sealed: bytes, expiry: int, realm: str
) -> None:
    reply = CredentialsReply(status, detail, user, sealed, expiry, realm)
    assert decode_reply(encode_reply(reply)) == reply


def test_a_node_that_does_not_relay_refuses_briefly_without_checking() -> None:
    """Issue 10: a client or ``--no-relay`` node serves no credentials; its refusal is
    final, never checks the (here forged) signature, and is smaller than the request."""
    who = Identity.generate()
    issuer = issuer_(unavailable=lambda: "client: --no-relay " + "x" * 500)
    reply, _ = ask(issuer, peer(who), signer=Identity.generate())
    assert reply.status is CredentialStatus.UNAVAILABLE
    assert reply.detail.startswith("client: --no-relay")
    assert reply.realm == "" and reply.username == "" and reply.sealed_password == b""
    key = nacl.public.PrivateKey.generate()
    request = signed_request(who, SUPERNODE.public_key, bytes(key.public_key), 3600, NOW)
    request_size = len(msgpack.packb(encode_request(request), use_bin_type=True))
    reply_size = len(msgpack.packb(encode_reply(reply), use_bin_type=True))
    assert reply_size < request_size
    assert issuer.outcomes == {"unavailable": 1}

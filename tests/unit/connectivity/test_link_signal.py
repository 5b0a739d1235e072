"""PeerLink's signalling payload and the pure parts of ICE server planning."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.connectivity.credentials import TurnCredentials
from p2pnode.connectivity.ice_servers import IcePlan, TurnTransport, plan_ice_servers
from p2pnode.connectivity.link_signal import (
    LINK_ID_BYTES,
    MAX_SDP_BYTES,
    SignalDecodeError,
    SignalKind,
    SignalMessage,
    decode_signal,
    encode_signal,
)
from p2pnode.connectivity.peerlink import sdp_fingerprints

LINK = bytes(range(LINK_ID_BYTES))
CREDS = TurnCredentials("1900000000:peer", "pw", "realm", 1900000000)
STUN = ("203.0.113.5", 3478)
TURN = ("203.0.113.6", 3478)


@pytest.mark.parametrize(
    "message",
    [
        SignalMessage(SignalKind.OFFER, LINK, "v=0\r\n"),
        SignalMessage(SignalKind.ANSWER, LINK, ""),
        SignalMessage(SignalKind.OFFER, LINK, "x" * MAX_SDP_BYTES),
    ],
)
def test_round_trip(message: SignalMessage) -> None:
    data = encode_signal(message)
    assert decode_signal(data) == message
    for cut in range(len(data)):
        with pytest.raises(SignalDecodeError):
            decode_signal(data[:cut])
    with pytest.raises(SignalDecodeError):
        decode_signal(data + b"\x00")


@pytest.mark.parametrize(
    "fields",
    [
        [2, 0, LINK, "v=0"],  # unknown version
        [1, 2, LINK, "v=0"],  # unknown kind
        [1, 0, LINK[:15], "v=0"],  # short link id
        [1, 0, "x" * 16, "v=0"],  # link id as text
        [1, 0, LINK, b"v=0"],  # sdp as bytes
        [1, 0, LINK, "x" * (MAX_SDP_BYTES + 1)],  # too long
        [True, 0, LINK, "v=0"],  # bool is not a version
        [1, 0, LINK],
        {"kind": 0},
    ],
)
def test_malformed_fields_are_refused(fields: object) -> None:
    with pytest.raises(SignalDecodeError):
        decode_signal(msgpack.packb(fields, use_bin_type=True))


def test_constructor_bounds() -> None:
    with pytest.raises(ValueError, match="link id"):
        SignalMessage(SignalKind.OFFER, b"short", "")
    with pytest.raises(ValueError, match="SDP longer"):
        SignalMessage(SignalKind.OFFER, LINK, "x" * (MAX_SDP_BYTES + 1))


@given(st.binary(max_size=300))
def test_decoder_is_total(data: bytes) -> None:
    with contextlib.suppress(SignalDecodeError):
        decode_signal(data)


def test_sdp_fingerprints() -> None:
    sdp = "v=0\r\na=fingerprint:SHA-256 ab:CD:01\r\na=fingerprint:sha-1 00:11\r\na=other\r\n"
    assert sdp_fingerprints(sdp) == (("sha-256", "AB:CD:01"), ("sha-1", "00:11"))
    assert sdp_fingerprints("v=0\r\n") == ()


def test_plan_with_udp_uses_stun_and_turn_over_udp() -> None:
    plan = plan_ice_servers(
        stun=STUN, turn_udp=TURN, turn_tcp=TURN, credentials=CREDS, udp_works=True, relay_id="r"
    )
    assert plan == IcePlan(STUN, TURN, TurnTransport.UDP, CREDS, "r")
    urls = [server.urls for server in plan.rtc_servers()]
    assert urls == ["stun:203.0.113.5:3478", "turn:203.0.113.6:3478?transport=udp"]
    assert plan.rtc_servers()[1].username == CREDS.username


def test_plan_without_udp_drops_stun_and_uses_turn_over_tcp() -> None:
    plan = plan_ice_servers(
        stun=STUN, turn_udp=TURN, turn_tcp=TURN, credentials=CREDS, udp_works=False
    )
    assert plan.stun is None and plan.turn == TURN and plan.turn_transport is TurnTransport.TCP
    assert [s.urls for s in plan.rtc_servers()] == ["turn:203.0.113.6:3478?transport=tcp"]


def test_plan_edge_cases() -> None:
    # No credentials: no TURN at all (our relays are never open).
    plan = plan_ice_servers(
        stun=STUN, turn_udp=TURN, turn_tcp=None, credentials=None, udp_works=True
    )
    assert plan == IcePlan(stun=STUN)
    # A TCP-only relay is used over TCP even when UDP works.
    plan = plan_ice_servers(
        stun=STUN, turn_udp=None, turn_tcp=TURN, credentials=CREDS, udp_works=True
    )
    assert plan.turn_transport is TurnTransport.TCP and plan.stun == STUN
    # UDP blocked and no TCP relay: nothing to gather against but host candidates.
    assert (
        plan_ice_servers(
            stun=STUN, turn_udp=TURN, turn_tcp=None, credentials=CREDS, udp_works=False
        )
        == IcePlan()
    )
    # Never None: aiortc would fall back to a public STUN server.
    assert IcePlan().rtc_servers() == []
    assert IcePlan(stun=("2001:db8::1", 3478)).rtc_servers()[0].urls == "stun:[2001:db8::1]:3478"
    with pytest.raises(ValueError, match="credentials"):
        IcePlan(turn=TURN)

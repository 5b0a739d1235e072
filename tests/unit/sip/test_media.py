"""The SDP model (what phones send) and the RTP / RFC 4733 codecs: tables, vectors, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.parser import parse_datagram
from p2pnode.gateways.sip.rtp import (
    DTMF_EVENTS,
    RtpDecodeError,
    RtpPacket,
    TelephoneEvent,
    dtmf_schedule,
)
from p2pnode.gateways.sip.sdp import (
    Codec,
    Direction,
    SdpDecodeError,
    parse_sdp,
)
from tests.unit.sip.rfc_vectors import VECTORS, load_vector

DESK_PHONE_OFFER = (
    b"v=0\r\n"
    b"o=- 1234 1234 IN IP4 192.168.1.20\r\n"
    b"s=SIP Call\r\n"
    b"c=IN IP4 192.168.1.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 18 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=ptime:20\r\n"
    b"a=maxptime:40\r\n"
    b"a=sendonly\r\n"
)


def test_desk_phone_offer_keeps_static_types_ptime_direction_and_dtmf() -> None:
    sdp = parse_sdp(DESK_PHONE_OFFER)
    (audio,) = sdp.media
    assert audio.codecs() == (
        Codec(0, "PCMU", 8000),
        Codec(18, "G729", 8000, 1, "annexb=no"),
        Codec(101, "telephone-event", 8000, 1, "0-16"),
    )
    assert audio.telephone_event == Codec(101, "telephone-event", 8000, 1, "0-16")
    assert (audio.ptime, audio.maxptime) == (20, 40)
    assert sdp.direction(audio) is Direction.SENDONLY
    assert sdp.direction(audio).reversed() is Direction.RECVONLY
    assert (sdp.address(audio), audio.port) == ("192.168.1.20", 4000)
    assert parse_sdp(sdp.encode()) == sdp
    assert sdp.encode() == DESK_PHONE_OFFER  # canonical input: byte-exact round trip


def test_session_level_direction_and_media_level_connection() -> None:
    sdp = parse_sdp(
        b"v=0\no=a 1 2 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=inactive\n"
        b"m=audio 5004 RTP/AVP 8\nc=IN IP4 198.51.100.9\nm=audio 0 RTP/AVP 0\n"
    )
    first, second = sdp.media
    assert sdp.direction(first) is Direction.INACTIVE
    assert (sdp.address(first), sdp.address(second)) == ("198.51.100.9", "192.0.2.1")
    assert second.port == 0  # a rejected stream (RFC 3264 §6)
    assert first.codecs() == (Codec(8, "PCMA", 8000),)


@pytest.mark.parametrize(
    ("vector", "addresses"),
    [
        ("ipv6-in-sdp", ["2001:db8::20", "2001:db8::20"]),
        ("mult-ip-in-sdp", ["192.0.2.1", "2001:db8::1"]),
        ("ipv4-mapped-ipv6", ["::ffff:192.0.2.2", "::ffff:192.0.2.2"]),
    ],
)
def test_rfc5118_bodies(vector: str, addresses: list[str]) -> None:
    message = parse_datagram(load_vector(VECTORS / "rfc5118" / f"{vector}.txt"))
    sdp = parse_sdp(message.body)
    assert [sdp.address(media) for media in sdp.media] == addresses
    assert parse_sdp(sdp.encode()) == sdp


def test_rfc4475_bodies_round_trip() -> None:
    sdp = parse_sdp(parse_datagram(load_vector(VECTORS / "rfc4475" / "wsinv.txt")).body)
    audio, video = sdp.media
    assert [codec.name for codec in audio.codecs()] == ["PCMU", "QCELP"]
    assert video.codecs() == (Codec(31, "LPC", 8000),)  # rtpmap without a rate
    assert parse_sdp(sdp.encode()) == sdp


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"v=1\r\n",
        b"v=0\r\ns=-\r\nt=0 0\r\n",  # no o=
        b"v=0\r\no=a 1 x IN IP4 h\r\ns=-\r\n",  # non-numeric version
        b"v=0\r\no=a 1 2 IN IP4 h\r\ns=-\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\no=a 1 2 IN IP4 h\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\no=a 1 2 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n",
        b"v=0\r\no=a 1 2 IN IP4 h\r\ns=-\r\nq=what\r\n",
        b"v=0\r\no=a 1 2 IN IP4 h\r\ns=-\r\n\xff\r\n",
        b"v=0\r\no=a 1 2 IN IP4 h\r\ns=-\r\n" + b"a=x\r\n" * 200,
        b"v=0\r\no=a 1 2 IN IP4 h\r\ns=-\r\n" + b"m=audio 1 RTP/AVP 0\r\n" * 20,
    ],
)
def test_invalid_sdp_is_refused(body: bytes) -> None:
    with pytest.raises(SdpDecodeError):
        parse_sdp(body)


@given(st.binary(max_size=600))
def test_fuzz_sdp_only_raises_its_error(data: bytes) -> None:
    with contextlib.suppress(SdpDecodeError):
        parse_sdp(data)


@given(st.lists(st.sampled_from(DESK_PHONE_OFFER.split(b"\r\n")), max_size=15))
def test_fuzz_sdp_shuffled_lines(lines: list[bytes]) -> None:
    try:
        sdp = parse_sdp(b"\r\n".join([b"v=0", *lines]))
    except SdpDecodeError:
        return
    for media in sdp.media:
        media.codecs()
        sdp.direction(media)
    assert parse_sdp(sdp.encode()) == sdp


RTP_CASES = [
    (
        RtpPacket(0, 1, 160, 0x11223344, b"\xff" * 4, marker=True),
        bytes.fromhex("80800001000000a011223344ffffffff"),
    ),
    (
        RtpPacket(101, 0xFFFF, 0xFFFFFFFF, 1, b"\x05\x0a\x00\xa0", csrcs=(7, 8)),
        bytes.fromhex("8265ffffffffffff00000001" + "00000007" + "00000008" + "050a00a0"),
    ),
    (
        RtpPacket(8, 2, 3, 4, b"ab", extension=(0xBEDE, b"\x10\x01\x00\x00"), padding=2),
        bytes.fromhex("b008000200000003000000 04".replace(" ", ""))
        + bytes.fromhex("bede0001100100006162") + b"\x00\x02",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("packet", "wire"), RTP_CASES)
def test_rtp_case_table(packet: RtpPacket, wire: bytes) -> None:
    assert packet.encode() == wire
    assert RtpPacket.decode(wire) == packet


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        bytes.fromhex("8000000100000002"),  # short header
        bytes.fromhex("400000010000000200000003"),  # version 1
        bytes.fromhex("830000010000000200000003"),  # 3 CSRCs missing
        bytes.fromhex("900000010000000200000003bede0002"),  # extension overruns
        bytes.fromhex("a00000010000000200000003ff"),  # padding larger than payload
        bytes.fromhex("a0000001000000020000000300"),  # zero padding count
    ],
)
def test_rtp_malformed(wire: bytes) -> None:
    with pytest.raises(RtpDecodeError):
        RtpPacket.decode(wire)


@given(st.binary(max_size=80))
def test_fuzz_rtp_only_raises_its_error(data: bytes) -> None:
    try:
        packet = RtpPacket.decode(data)
    except RtpDecodeError:
        return
    assert RtpPacket.decode(packet.encode()) == packet


def test_telephone_event_vector_and_errors() -> None:
    # RFC 4733 §2.3 layout: digit 5, end bit, volume 10, duration 800.
    assert TelephoneEvent(5, True, 10, 800).encode() == bytes.fromhex("058a0320")
    assert TelephoneEvent.decode(bytes.fromhex("058a0320")) == TelephoneEvent(5, True, 10, 800)
    for bad in (b"", b"\x05\x8a\x03", b"\x05\x8a\x03\x20\x00"):
        with pytest.raises(RtpDecodeError):
            TelephoneEvent.decode(bad)


def test_dtmf_schedule_paces_one_event() -> None:
    schedule = dtmf_schedule(
        "#", payload_type=101, ssrc=9, first_sequence=65534, timestamp=1000, duration_ms=100
    )
    times = [when for when, _ in schedule]
    assert times == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12])
    events = [TelephoneEvent.decode(packet.payload) for _, packet in schedule]
    assert {event.event for event in events} == {DTMF_EVENTS["#"]}
    assert [event.duration for event in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [event.end for event in events] == [False] * 4 + [True] * 3
    assert [packet.marker for _, packet in schedule] == [True] + [False] * 6
    assert {packet.timestamp for _, packet in schedule} == {1000}
    assert [packet.sequence for _, packet in schedule] == [65534, 65535, 0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="DTMF"):
        dtmf_schedule("x", payload_type=101, ssrc=1, first_sequence=0, timestamp=0)

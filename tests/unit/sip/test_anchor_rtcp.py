"""RTCP without rtcp-mux in the SDP: ``a=rtcp`` parsed (RFC 3605), anchored on the relay's
RTCP port, and read by the bridge's phone format (RTP + 1 by default, RFC 3550 §11)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.anchor import anchor_sdp
from p2pnode.gateways.sip.bridge_ua import choose_phone_format
from p2pnode.gateways.sip.media import Address, Side
from p2pnode.gateways.sip.sdp import MediaDescription, parse_sdp

PHONE_SIP = ("203.0.113.7", 5060)  # the phone's public SIP source (behind a NAT)
RTP_PORTS = {Side.A: 40000, Side.B: 40002}
RTCP_PORTS = {Side.A: 40001, Side.B: 40003}


class Ports:
    """The relay's ports as the anchor sees them; records what it was told to expect."""

    def __init__(self, *, rtcp: bool = True) -> None:
        self.rtcp = rtcp
        self.asked: list[Side] = []
        self.expected: dict[Side, Address] = {}
        self.expected_rtcp: dict[Side, Address] = {}

    def port(self, side: Side) -> int:
        return RTP_PORTS[side]

    def expect(self, side: Side, address: Address) -> None:
        self.expected[side] = address

    def rtcp_port(self, side: Side) -> int | None:
        self.asked.append(side)
        return RTCP_PORTS[side] if self.rtcp else None

    def expect_rtcp(self, side: Side, address: Address) -> None:
        self.expected_rtcp[side] = address

    def close(self) -> None:
        pass


def offer(*attributes: str, host: str = "192.168.1.20", port: int = 4000) -> bytes:
    lines = [
        "v=0", f"o=- 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000",
        *(f"a={attribute}" for attribute in attributes), "a=sendrecv", "",
    ]  # fmt: skip
    return "\r\n".join(lines).encode()


def audio(body: bytes) -> MediaDescription:
    return parse_sdp(body).media[0]


def anchored(body: bytes, ports: Ports) -> MediaDescription:
    out = anchor_sdp(
        body, sender=Side.A, sender_source=PHONE_SIP, media=ports, media_host="198.51.100.1"
    )
    return audio(out)


def test_rtcp_attribute_forms() -> None:
    assert audio(offer("rtcp:53020")).rtcp_address() == (None, 53020)
    stated = audio(offer("rtcp:53020 IN IP4 126.16.64.4")).rtcp_address()
    assert stated == ("126.16.64.4", 53020)  # RFC 3605 §2.1's example
    assert audio(offer("rtcp:53020 IN IP6 2001:db8::1")).rtcp_address() == ("2001:db8::1", 53020)
    assert audio(offer()).rtcp_address() is None
    for bad in ("rtcp:", "rtcp:abc", "rtcp:0", "rtcp:65536", "rtcp:5 IN", "rtcp:5 IN IPX a"):
        assert audio(offer(bad)).rtcp_address() is None
    assert audio(offer("rtcp-mux")).rtcp_mux and not audio(offer()).rtcp_mux


@given(st.text(max_size=60))
def test_fuzz_rtcp_attribute_is_total(value: str) -> None:
    section = MediaDescription("audio", 4000, "RTP/AVP", ("0",), attributes=(("rtcp", value),))
    found = section.rtcp_address()
    assert found is None or 0 < found[1] < 65536


def test_with_rtcp_port_replaces_or_removes_the_line() -> None:
    section = audio(offer("rtcp:53020 IN IP4 10.0.0.1", "ptime:20"))
    assert section.with_rtcp_port(40001).attribute("rtcp") == "40001"
    assert [k for k, _ in section.with_rtcp_port(40001).attributes].count("rtcp") == 1
    assert section.with_rtcp_port(None).attribute("rtcp") is None
    assert section.with_rtcp_port(None).ptime == 20


def test_no_mux_gets_the_relay_rtcp_port_facing_the_receiver_and_expects_rtp_plus_one() -> None:
    ports = Ports()
    section = anchored(offer(), ports)
    assert section.port == RTP_PORTS[Side.B]
    assert section.attribute("rtcp") == str(RTCP_PORTS[Side.B])
    assert ports.asked == [Side.B]
    # The phone's private SDP address is replaced by its SIP source (NAT), port RTP + 1.
    assert ports.expected_rtcp[Side.A] == ("203.0.113.7", 4001)


def test_the_senders_a_rtcp_is_where_its_rtcp_comes_from_and_never_passes_through() -> None:
    ports = Ports()
    section = anchored(offer("rtcp:4711"), ports)
    assert ports.expected_rtcp[Side.A] == ("203.0.113.7", 4711)
    assert section.attribute("rtcp") == str(RTCP_PORTS[Side.B])
    ports = Ports()
    anchored(offer("rtcp:4711 IN IP4 198.51.100.9"), ports)  # a public RTCP address
    assert ports.expected_rtcp[Side.A] == ("198.51.100.9", 4711)


def test_mux_alone_needs_no_rtcp_port_but_mux_with_a_fallback_gets_one() -> None:
    ports = Ports()
    section = anchored(offer("rtcp-mux"), ports)
    assert ports.asked == [] and section.attribute("rtcp") is None
    assert section.rtcp_mux
    # RFC 5761 §5.1.3: an offer with both may be answered without mux.
    section = anchored(offer("rtcp-mux", "rtcp:4001"), ports)
    assert ports.asked == [Side.B] and section.attribute("rtcp") == str(RTCP_PORTS[Side.B])


def test_no_rtcp_port_left_drops_the_senders_a_rtcp() -> None:
    ports = Ports(rtcp=False)
    section = anchored(offer("rtcp:4711"), ports)
    assert section.attribute("rtcp") is None and ports.expected_rtcp == {}


def test_hold_by_null_address_expects_rtcp_from_nowhere() -> None:
    ports = Ports()
    anchored(offer(host="0.0.0.0"), ports)
    assert ports.expected_rtcp[Side.A] == ("0.0.0.0", 4001)


def test_the_bridge_reads_the_phones_rtcp_address() -> None:
    plain = choose_phone_format(offer(host="127.0.0.1"))
    assert plain is not None and not plain.rtcp_mux
    assert plain.rtcp_address == ("127.0.0.1", 4001)  # RFC 3550 §11: RTP + 1
    stated = choose_phone_format(offer("rtcp:5555", host="127.0.0.1"))
    assert stated is not None and stated.rtcp_address == ("127.0.0.1", 5555)
    elsewhere = choose_phone_format(offer("rtcp:5555 IN IP4 127.0.0.9", host="127.0.0.1"))
    assert elsewhere is not None and elsewhere.rtcp_address == ("127.0.0.9", 5555)
    muxed = choose_phone_format(offer("rtcp-mux", "rtcp:5555", host="127.0.0.1"))
    assert muxed is not None and muxed.rtcp_mux and muxed.rtcp_address is None

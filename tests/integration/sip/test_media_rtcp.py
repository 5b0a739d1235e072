"""RTCP ports on loopback: the relay's per-side RTCP socket (opened on demand next to
the RTP port, latched apart, pooled with its pair) and the bridge leg's
:class:`RtcpPort` (bound next to RTP, reads only the phone's IP, latches its port)."""

from __future__ import annotations

import asyncio
import socket

from p2pnode.gateways.sip.bridge_rtcp_port import RtcpPort
from p2pnode.gateways.sip.bridge_ua import BridgeUserAgent
from p2pnode.gateways.sip.media import MediaRelay, Side
from tests.integration.sip.test_media_pool import _address, _received, _udp

LOCAL = "127.0.0.1"


def test_relay_forwards_rtcp_between_its_rtcp_ports_only_from_the_signalled_sources() -> None:
    asyncio.run(_relay_rtcp())


async def _relay_rtcp() -> None:
    relay = MediaRelay(LOCAL, max_idle=2, quarantine=0.0)
    phone, bridge, stranger = _udp(), _udp(), _udp("127.0.0.5")
    try:
        handle = relay.open()
        a, b = handle.rtcp_port(Side.A), handle.rtcp_port(Side.B)
        assert a is not None and b is not None
        assert handle.rtcp_port(Side.A) == a  # opened once
        assert {a, b}.isdisjoint({handle.port(Side.A), handle.port(Side.B)})
        handle.expect_rtcp(Side.A, _address(phone))
        handle.expect_rtcp(Side.B, _address(bridge))
        phone.sendto(b"\x81\xc9phone RR", (LOCAL, a))
        assert await _received(bridge, 0.2) == [b"\x81\xc9phone RR"]
        bridge.sendto(b"\x80\xc8bridge SR", (LOCAL, b))
        assert await _received(phone, 0.2) == [b"\x80\xc8bridge SR"]
        # RTCP does not leak onto RTP: nothing arrived at the RTP ports' peers.
        stranger.sendto(b"forged", (LOCAL, a))  # another IP: RTP bleed refused
        assert await _received(bridge, 0.2) == []
        stats = relay.statistics()
        assert stats.rtcp_forwarded == 2 and stats.forwarded == 0
        assert dict(stats.dropped).get("rtcp source not the signalled address") == 1
        ports = (a, b)
        handle.close()
        again = relay.open()  # the pooled pair comes back with its RTCP sockets, drained
        assert (again.rtcp_port(Side.A), again.rtcp_port(Side.B)) == ports
        again.expect_rtcp(Side.A, _address(phone))
        phone.sendto(b"\x81\xc9early", (LOCAL, ports[0]))  # B has no address yet
        await asyncio.sleep(0.1)
        assert dict(relay.statistics().dropped).get("rtcp other side has no address yet") == 1
    finally:
        relay.close()
        for sock in (phone, bridge, stranger):
            sock.close()


def test_relay_drops_rtcp_when_the_other_side_took_no_rtcp_port() -> None:
    asyncio.run(_one_sided())


async def _one_sided() -> None:
    relay = MediaRelay(LOCAL)
    phone, other = _udp(), _udp()
    try:
        handle = relay.open()
        port = handle.rtcp_port(Side.A)
        assert port is not None
        handle.expect_rtcp(Side.A, _address(phone))
        handle.expect_rtcp(Side.B, _address(other))
        phone.sendto(b"\x81\xc9RR", (LOCAL, port))
        await asyncio.sleep(0.1)
        assert dict(relay.statistics().dropped) == {"rtcp other side has no rtcp port": 1}
    finally:
        relay.close()
        phone.close()
        other.close()


def test_leg_rtcp_port_binds_next_to_rtp_and_reads_only_the_phone() -> None:
    asyncio.run(_leg_port())


async def _leg_port() -> None:
    reports: list[bytes] = []
    port = RtcpPort(reports.append)
    rtp = _udp()
    phone, moved, stranger = _udp(), _udp(), _udp("127.0.0.5")
    try:
        rtp_port = _address(rtp)[1]
        rtp.close()  # its number is what the leg's RTP socket would hold
        local = await port.open(LOCAL, rtp_port)
        assert local != rtp_port
        stranger.sendto(b"before any address", (LOCAL, local))
        await asyncio.sleep(0.05)
        assert port.wrong_source == 1 and reports == []
        # The SDP named RTP + 1; the phone's NAT sends from another port: latched.
        port.set_remote((LOCAL, 9))
        phone.sendto(b"report 1", (LOCAL, local))
        await asyncio.sleep(0.05)
        assert reports == [b"report 1"] and port.remote == _address(phone)
        port.send(b"ours")
        assert await _received(phone, 0.1) == [b"ours"]
        moved.sendto(b"same IP, other port after the latch", (LOCAL, local))
        stranger.sendto(b"other IP", (LOCAL, local))
        await asyncio.sleep(0.05)
        assert reports == [b"report 1"] and port.wrong_source == 3
        assert (port.received, port.sent) == (1, 1)
    finally:
        port.close()
        for sock in (phone, moved, stranger):
            sock.close()


def test_leg_rtcp_port_takes_any_port_when_rtp_plus_one_is_taken() -> None:
    asyncio.run(_taken())


async def _taken() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind((LOCAL, 0))
    taken = _address(holder)[1]
    port = RtcpPort(lambda _data: None)
    try:
        local = await port.open(LOCAL, taken - 1)
        assert local != taken
    finally:
        port.close()
        holder.close()


def test_the_legs_rtcp_socket_goes_with_its_rtp_socket_or_with_mux() -> None:
    asyncio.run(_leg_lifecycle())


def _offer(*attributes: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             "m=audio 4000 RTP/AVP 0", *attributes, ""]  # fmt: skip
    return "\r\n".join(lines).encode()


async def _leg_lifecycle() -> None:
    ua = BridgeUserAgent("bob", "pw", "gw.test", (LOCAL, 9))
    # No mux: the leg's RTCP goes to the phone's RTP + 1, our answer names our port.
    transport, leg = await ua.open_leg(_offer())
    port = leg.rtcp_port
    assert port is not None and port.remote == (LOCAL, 4001) and leg.rtcp is not None
    rtp_port = leg.local_address[1]
    assert f"a=rtcp:{port.local_port}" in ua._sdp(rtp_port).decode()
    transport.close()  # the UA ends the call by closing the RTP socket
    await asyncio.sleep(0.05)
    assert leg.is_closed and port.is_closed
    # rtcp-mux: the separate socket is closed at once and not announced.
    transport, leg = await ua.open_leg(_offer("a=rtcp-mux"))
    assert leg.rtcp_port is None and leg.rtcp is not None
    answer = ua._sdp(leg.local_address[1]).decode()
    assert "a=rtcp-mux" in answer and "a=rtcp:" not in answer
    transport.close()

"""A CANCEL while the gateway still looks up where a call goes: 200, 487, nothing sent.

RFC 3261 §9.2/§16.10: a CANCEL matching a pending INVITE server transaction
gets 200 and the INVITE 487, also while the gateway resolves the target (an
ENUM look-up for a number, RFC 3263 DNS for another domain); the look-up's
answer is then dropped, so no INVITE leaves for the cancelled call. The slow
look-up is injected where the gateway takes it (its number directory, its
RFC 3263 locator) and waits until the test releases it; the caller is an IP
trunk speaking raw UDP, the carrier a UDP socket that records what reaches
it. A second call, not cancelled, then takes the same path and reaches the
carrier: the first INVITE the carrier sees is that call's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pnode.directory.trust import Route
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.locate import Hop
from p2pnode.gateways.sip.message import SipRequest, SipResponse
from p2pnode.gateways.sip.parser import parse_datagram
from p2pnode.gateways.sip.trunks import IpTrunk

DOMAIN = "gw.test"
NUMBER_URI = "sip:+442079460020@gw.test"  # no ENUM record: the upstream trunk carries it
FOREIGN_URI = "sip:dora@carrier.example"  # another domain: RFC 3263 first


class SlowLookups:
    """The look-ups the gateway asks for, each answered only once ``release`` is set."""

    def __init__(self, carrier: tuple[str, int]) -> None:
        self.carrier = carrier
        self.asked: asyncio.Queue[str] = asyncio.Queue()
        self.release = asyncio.Event()

    async def route(self, number: str) -> Route | None:  # the number directory (ENUM)
        self.asked.put_nowait(number)
        await self.release.wait()
        return None

    async def locate(self, uri: SipUri, *, random: Callable[[], float]) -> list[Hop]:
        self.asked.put_nowait(str(uri))
        await self.release.wait()
        return [Hop(*self.carrier)]


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def message(method: str, uri: str, port: int, call: str, *extra: str, cseq: int = 1) -> bytes:
    sdp = (
        b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\n"
    )
    body = sdp if method == "INVITE" else b""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call};rport",
        "Max-Forwards: 70",
        f"From: <sip:{call}@pbx.example>;tag=f{call}",  # the caller shown on the B leg
        extra[0] if extra else f"To: <{uri}>",
        f"Call-ID: {call}@pbx.example",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:pbx@127.0.0.1:{port}>",
        *(("Content-Type: application/sdp",) if body else ()),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def final(sock: socket.socket, wanted: dict[str, int]) -> dict[str, SipResponse]:
    """Final responses until one per CSeq method in ``wanted`` arrived (bounded: 10 s)."""
    loop = asyncio.get_running_loop()
    got: dict[str, SipResponse] = {}
    async with asyncio.timeout(10):
        while set(got) != set(wanted):
            reply = parse_datagram(await loop.sock_recv(sock, 65535))
            assert isinstance(reply, SipResponse)
            if reply.status >= 200:
                got[reply.cseq.method] = reply
    return got


@pytest.mark.parametrize("target", [NUMBER_URI, FOREIGN_URI])
def test_cancel_during_the_lookup_answers_487_and_nothing_goes_out(
    tmp_path: Path, target: str
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        carrier, phone = udp_socket(), udp_socket()
        lookups = SlowLookups(carrier.getsockname())
        store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
        config = GatewayConfig(
            DOMAIN,
            upstream=carrier.getsockname(),
            ip_trunks=(IpTrunk("pbx", ("127.0.0.1",), ()),),
        )
        gateway = SipGateway(config, store, numbers=lookups, locator=lookups.locate)
        await gateway.start()
        assert gateway.address is not None
        port = phone.getsockname()[1]
        try:
            phone.sendto(message("INVITE", target, port, "c1"), gateway.address)
            await asyncio.wait_for(lookups.asked.get(), 10)  # the look-up is under way
            phone.sendto(message("CANCEL", target, port, "c1"), gateway.address)
            answers = await final(phone, {"CANCEL": 200, "INVITE": 487})
            assert answers["CANCEL"].status == 200
            assert answers["INVITE"].status == 487
            to = answers["INVITE"].header("To") or ""
            phone.sendto(message("ACK", target, port, "c1", f"To: {to}"), gateway.address)
            assert gateway.statistics().cancelled_lookups == 1
            lookups.release.set()  # the look-up would answer now: its answer is dropped
            phone.sendto(message("INVITE", target, port, "c2"), gateway.address)
            async with asyncio.timeout(10):
                first = parse_datagram(await loop.sock_recv(carrier, 65535))
            assert isinstance(first, SipRequest) and first.method == "INVITE"
            # The B leg has the B2BUA's own Call-ID; the caller it shows tells them apart.
            assert isinstance(first.from_.uri, SipUri) and first.from_.uri.user == "c2"
            assert gateway.b2bua is not None and gateway.b2bua.calls_started == 1
        finally:
            phone.close()
            carrier.close()
            await gateway.stop()

    asyncio.run(scenario())

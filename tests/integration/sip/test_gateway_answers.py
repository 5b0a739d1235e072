"""What desk phones and scanners send, answered by the running gateway over UDP.

Raw datagrams from a socket on 127.0.0.1: OPTIONS (200, Allow, no banner),
SUBSCRIBE for MWI (489), PUBLISH (405 with Allow), an unknown method (501),
Max-Forwards 0 (483), an unsupported Require (420), an in-dialog BYE for no
call (481), and a scanner's User-Agent (no answer at all).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.message import SipResponse
from p2pnode.gateways.sip.parser import parse_datagram

DOMAIN = "gw.test"


def request(method: str, port: int, *extra: str, uri: str = "sip:bob@gw.test") -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(6).hex()};rport",
        "From: <sip:carol@other.example>;tag=c1",
        "To: <sip:bob@gw.test>",
        f"Call-ID: {os.urandom(6).hex()}",
        f"CSeq: 1 {method}",
        *extra,
        "Content-Length: 0",
    ]
    if not any(line.startswith("Max-Forwards") for line in extra):
        lines.insert(2, "Max-Forwards: 70")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


CASES = [
    ("OPTIONS", (), 200),
    ("SUBSCRIBE", ("Event: message-summary", "Contact: <sip:carol@127.0.0.1>"), 489),
    ("PUBLISH", ("Event: presence",), 405),
    ("FROBNICATE", (), 501),
    ("INVITE", ("Max-Forwards: 0", "Contact: <sip:carol@127.0.0.1>"), 483),
    ("INVITE", ("Require: 100rel", "Contact: <sip:carol@127.0.0.1>"), 420),
]


@pytest.fixture
def answers(tmp_path: Path) -> list[tuple[int, SipResponse | None]]:
    async def scenario() -> list[tuple[int, SipResponse | None]]:
        store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
        store.add("bob", None, randbytes=os.urandom)
        gateway = SipGateway(GatewayConfig(DOMAIN), store)
        await gateway.start()
        assert gateway.address is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        results: list[tuple[int, SipResponse | None]] = []
        cases = [*CASES, ("OPTIONS", ("User-Agent: friendly-scanner",), 0)]
        cases.append(("BYE", (), 481))
        try:
            for method, extra, expected in cases:
                data = request(method, port, *extra)
                if method == "BYE":
                    data = data.replace(b"To: <sip:bob@gw.test>", b"To: <sip:bob@gw.test>;tag=x")
                sock.sendto(data, gateway.address)
                response: SipResponse | None = None
                while True:
                    try:
                        raw = await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.5)
                    except TimeoutError:
                        break
                    message = parse_datagram(raw)
                    assert isinstance(message, SipResponse)
                    # Final answers to INVITE are retransmitted until ACKed: match ours.
                    if message.status >= 200 and message.call_id.encode() in data:
                        response = message
                        break
                results.append((expected, response))
        finally:
            sock.close()
            await gateway.stop()
        return results

    return asyncio.run(scenario())


def test_each_request_gets_its_due_answer_and_no_banner(
    answers: list[tuple[int, SipResponse | None]],
) -> None:
    for expected, response in answers:
        if expected == 0:
            assert response is None  # the scanner got nothing at all
            continue
        assert response is not None and response.status == expected
        assert response.header("Server") is None and response.header("User-Agent") is None
        if expected in (200, 405, 501):
            assert "INVITE" in (response.header("Allow") or "")
        if expected == 420:
            assert response.header("Unsupported") == "100rel"

"""sipp (a foreign SIP network) calls a P2P login through the gateway and sends RFC 4733 digits.

sipp 3.6 sends ``INVITE sip:bob@gw.test`` from ``carrier@other.example``
(unauthenticated: a foreign caller may reach our logins), offering PCMU and
telephone-event/8000 on payload type 101. The gateway routes it to bob's
registered device, which is the bridge; the bridge dials bob's P2P identity
(a calls service on loopback, auto-answer), answers sipp, and sipp plays the
Debian pcaps ``dtmf_2833_1``, ``_5`` and ``_9`` (ten packets each, one event
timestamp per digit). The digits must appear in the bridge's call events once
each and in order, and - carried as DTMF call signals - in bob's own call
events (``CallUpdate.dtmf``) in the same order.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import BridgedCallService, BridgeUserAgent, SipP2pBridge
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.harness.tools import require_tool
from tests.integration.bridge.board import Board
from tests.integration.bridge.test_bridge_call_loopback import loopback_ice

pytestmark = pytest.mark.interop
DOMAIN = "gw.test"
PCAPS = "/usr/share/sip-tester/dtmf_2833_{}.pcap"
DIGITS = "159"
WAIT = 20.0

_PLAY = "\n".join(
    f"""  <nop><action><exec play_pcap_audio="{PCAPS.format(digit)}"/></action></nop>
  <pause milliseconds="400"/>"""
    for digit in DIGITS
)

UAC = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier dtmf">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@gw.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:carrier@other.example>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@gw.test>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:carrier@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:carrier@other.example>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="300"/>
{_PLAY}
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:carrier@other.example>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scenario(sipp: str, tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN), store)
    await gateway.start()
    assert gateway.address is not None
    bridge_ua = BridgeUserAgent("bob", bob_password, DOMAIN, gateway.address)
    board = Board(("gateway-identity", "bob-identity"))
    config = CallConfig(audio_codecs=("PCMU",))
    try:
        await bridge_ua.start()
        await bridge_ua.register()
        hosted = BridgedCallService("gateway-identity", config, board.sender("gateway-identity"))
        async with (
            hosted,
            CallService(
                "bob-identity",
                CallConfig(audio_codecs=("PCMU",), auto_answer=True),
                board.sender("bob-identity"),
                answer_media=lambda: CallMedia(ToneSource(550.0)),
            ) as bob,
            asyncio.TaskGroup() as group,
        ):
            board.services = {"gateway-identity": hosted, "bob-identity": bob}
            tasks = [group.create_task(board.pump(name)) for name in board.queues]
            bridge = SipP2pBridge(hosted, bridge_ua, "gateway", peers={"bob": "bob-identity"}.get)
            tasks.append(group.create_task(bridge.run()))
            script = tmp_path / "uac.xml"
            script.write_text(UAC)
            process = await asyncio.create_subprocess_exec(
                "timeout", "40", sipp, "-sf", str(script),
                f"{gateway.address[0]}:{gateway.address[1]}", "-s", "bob",
                "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
                "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                cwd=tmp_path,
            )  # fmt: skip
            _, errors = await asyncio.wait_for(process.communicate(), 45)
            events = []
            while not bridge.events.empty():
                events.append(bridge.events.get_nowait())
            assert process.returncode == 0, (errors.decode(errors="replace")[-800:], events)
            heard: list[tuple[bytes, str]] = []  # digits in bob's own call events
            async with asyncio.timeout(WAIT):
                while (update := await bob.wait_update()).state is not CallState.HUNG_UP:
                    if update.dtmf is not None:  # sipp's BYE ends the loop
                        heard.append((update.call_id, update.dtmf))
            assert len(bridge.digits) == 1, events
            (call_id,) = bridge.digits
            digits = "".join(d.digit for d in bridge.digits[call_id])
            for task in tasks:
                task.cancel()
        assert update.call_id == call_id
        assert digits == DIGITS
        # The digits crossed the bridge as DTMF call signals: bob's call events show them.
        assert [digit for _, digit in heard] == list(DIGITS)
        assert {bob_call for bob_call, _ in heard} == {update.call_id}
    finally:
        await bridge_ua.close()
        await gateway.stop()


@pytest.mark.slow
def test_sipp_digits_reach_the_bridged_p2p_call_in_order(tmp_path: Path) -> None:
    sipp = require_tool("sipp", "sip-tester")
    with loopback_ice():
        asyncio.run(scenario(sipp, tmp_path))

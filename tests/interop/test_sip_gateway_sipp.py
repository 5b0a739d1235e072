"""sipp against the running gateway: calls with PCMA media, trunks, DIDs, a wrong password.

The gateway is the real service (SipGateway: UDP transport, registrar, B2BUA,
RTP relay) on 127.0.0.1 with kernel-chosen ports. sipp 3.6.1 plays the
carrier, the PBX and the desk phone; where a device must register we register
its address with our own user agent (third-party registration), because a
sipp client scenario cannot receive the INVITE of a new call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.rtp import RtpDecodeError, RtpPacket
from p2pnode.gateways.sip.trunks import IpTrunk, RegistrationTrunk
from p2pnode.gateways.sip.useragent import SipUserAgent
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

DOMAIN = "gw.test"
PCAP = Path("/usr/share/sip-tester/g711a.pcap")

_RESPONSE_HEAD = """[last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]"""

UAS = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas">
  <recv request="INVITE">
    <action>
      <ereg regexp="TO_PATTERN" search_in="hdr" header="To:" check_it="true" assign_to="1"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      {_RESPONSE_HEAD}
      Contact: <sip:[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      {_RESPONSE_HEAD}
      Contact: <sip:[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio SINK_PORT RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="1"/>
</scenario>
"""

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@gw.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:carrier@other.example>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@gw.test>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:carrier@[local_ip]:[local_port]>
      P-Asserted-Identity: <sip:+4930999@carrier.example>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

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
  <nop>
    <action>
      <exec play_pcap_audio="PCAP"/>
    </action>
  </nop>
  <pause milliseconds="PAUSE_MS"/>
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


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _Sink(asyncio.DatagramProtocol):
    """The far end's media: counts PCMA RTP packets."""

    def __init__(self) -> None:
        self.pcma = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            if RtpPacket.decode(data).payload_type == 8:
                self.pcma += 1
        except RtpDecodeError:
            pass


async def _sipp(sipp: str, args: list[str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "timeout", "30", sipp, *args, "-m", "1", "-nostdin", "-timeout", "20", "-timeout_error",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=cwd,
    )  # fmt: skip


async def _uas(sipp: str, tmp: Path, to_pattern: str, sink_port: int) -> tuple[object, int]:
    scenario = tmp / "uas.xml"
    scenario.write_text(UAS.replace("TO_PATTERN", to_pattern).replace("SINK_PORT", str(sink_port)))
    port = free_udp_port()
    process = await _sipp(sipp, ["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port)], tmp)
    return process, port


async def _uac(
    sipp: str, tmp: Path, gateway: tuple[str, int], service: str, local_ip: str, pause_ms: int
) -> int:
    scenario = tmp / f"uac-{local_ip}.xml"
    scenario.write_text(UAC.replace("PCAP", str(PCAP)).replace("PAUSE_MS", str(pause_ms)))
    args = [
        "-sf", str(scenario), f"{gateway[0]}:{gateway[1]}", "-s", service,
        "-i", local_ip, "-p", str(free_udp_port(local_ip)), "-mp", str(free_udp_port(local_ip)),
    ]  # fmt: skip
    process = await _sipp(sipp, args, tmp)
    return await asyncio.wait_for(process.wait(), 40)


async def _started(tmp: Path, config: GatewayConfig) -> tuple[SipGateway, dict[str, str]]:
    store = AccountStore(tmp / "node.sqlite", DOMAIN)
    passwords = {}
    for login in ("alice", "bob", "pbx"):
        _, passwords[login] = store.add(login, None, randbytes=os.urandom)
    gateway = SipGateway(config, store)
    await gateway.start()
    return gateway, passwords


def test_sipp_uac_calls_sipp_uas_through_the_gateway_and_pcma_reaches_the_far_end(
    tmp_path: Path,
) -> None:
    sipp = require_tool("sipp", "sip-tester")

    async def scenario() -> None:
        gateway, passwords = await _started(tmp_path, GatewayConfig(DOMAIN))
        assert gateway.address is not None
        loop = asyncio.get_running_loop()
        sink_transport, sink = await loop.create_datagram_endpoint(
            _Sink, local_addr=("127.0.0.1", 0)
        )
        phone = SipUserAgent("bob", passwords["bob"], DOMAIN, gateway.address)
        try:
            uas, uas_port = await _uas(
                sipp, tmp_path, "sip:bob@gw.test", sink_transport.get_extra_info("sockname")[1]
            )
            await phone.start()
            await phone.register(contact=f"<sip:bob@127.0.0.1:{uas_port}>")
            assert await _uac(sipp, tmp_path, gateway.address, "bob", "127.0.0.1", 1500) == 0
            assert await asyncio.wait_for(uas.wait(), 20) == 0  # type: ignore[attr-defined]
            # ~1.5 s of the 4.7 s pcap at 50 packets/s went through the relay to the far end.
            assert sink.pcma >= 40
            assert gateway.statistics().rtp_forwarded >= sink.pcma
            assert gateway.statistics().active_calls == 0
        finally:
            sink_transport.close()
            await phone.close()
            await gateway.stop()

    asyncio.run(scenario())


def test_ip_trunk_is_accepted_from_its_address_with_pai_and_refused_from_another(
    tmp_path: Path,
) -> None:
    sipp = require_tool("sipp", "sip-tester")
    config = GatewayConfig(
        DOMAIN,
        ip_trunks=(IpTrunk("carrier", ("127.0.0.2/32",)),),
        account_dids=(("+49 30 555", "bob"),),
    )

    async def scenario() -> None:
        gateway, passwords = await _started(tmp_path, config)
        assert gateway.address is not None
        bob = SipUserAgent("bob", passwords["bob"], DOMAIN, gateway.address)
        try:
            await bob.start()
            await bob.register()
            # From the trunk's address: the DID rings bob, caller ID from the trusted PAI.
            assert await _uac(sipp, tmp_path, gateway.address, "4930555", "127.0.0.2", 300) == 0
            call = bob.incoming.get_nowait()
            assert str(call.dialog.remote_uri.uri) == "sip:+4930999@carrier.example"
            # The same INVITE from another address is an anonymous caller: DIDs refused.
            assert await _uac(sipp, tmp_path, gateway.address, "4930555", "127.0.0.3", 300) != 0
            assert bob.incoming.empty()
        finally:
            await bob.close()
            await gateway.stop()

    asyncio.run(scenario())


def test_registration_trunk_pbx_receives_a_did_call_with_the_did_in_to(tmp_path: Path) -> None:
    sipp = require_tool("sipp", "sip-tester")
    config = GatewayConfig(DOMAIN, registration_trunks=(RegistrationTrunk("pbx", ("4930777",)),))

    async def scenario() -> None:
        gateway, passwords = await _started(tmp_path, config)
        assert gateway.address is not None
        sink_transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            _Sink, local_addr=("127.0.0.1", 0)
        )
        pbx = SipUserAgent("pbx", passwords["pbx"], DOMAIN, gateway.address)
        alice = SipUserAgent("alice", passwords["alice"], DOMAIN, gateway.address)
        try:
            uas, uas_port = await _uas(
                sipp, tmp_path, "sip:4930777@gw.test", sink_transport.get_extra_info("sockname")[1]
            )
            await pbx.start()
            await pbx.register(contact=f"<sip:pbx@127.0.0.1:{uas_port}>")
            await alice.start()
            call = await asyncio.wait_for(alice.call("+4930777"), 10)
            await call.hangup()
            assert await asyncio.wait_for(uas.wait(), 20) == 0  # type: ignore[attr-defined]
        finally:
            sink_transport.close()
            await pbx.close()
            await alice.close()
            await gateway.stop()

    asyncio.run(scenario())


def test_sipp_register_with_a_wrong_password_is_refused_and_logged_with_the_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sipp = require_tool("sipp", "sip-tester")
    from tests.interop.test_sip_register import SCENARIO

    async def scenario() -> None:
        gateway, passwords = await _started(tmp_path, GatewayConfig(DOMAIN))
        assert gateway.address is not None
        path = tmp_path / "register.xml"
        path.write_text(SCENARIO)
        try:
            for password, expected_ok in ((passwords["alice"], True), ("wrong-password-1", False)):
                args = [
                    "-sf", str(path), f"127.0.0.1:{gateway.address[1]}", "-s", "alice",
                    "-au", "alice", "-ap", password, "-i", "127.0.0.1", "-p", str(free_udp_port()),
                ]  # fmt: skip
                process = await _sipp(sipp, args, tmp_path)
                assert (await asyncio.wait_for(process.wait(), 40) == 0) is expected_ok
        finally:
            await gateway.stop()

    with caplog.at_level(logging.WARNING, logger="p2pnode.gateways.sip.gateway"):
        asyncio.run(scenario())
    failures = [r.getMessage() for r in caplog.records if "sip auth failed" in r.getMessage()]
    assert failures and "source=127.0.0.1 user=alice method=REGISTER" in failures[0]


UAS_EARLY = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas with early media, answer in the ACK">
  <recv request="INVITE">
    <action>
      <ereg regexp="^$" search_in="body" check_it="true" assign_to="1"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 183 Session Progress
      {_RESPONSE_HEAD}
      Contact: <sip:[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio 4000 RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      {_RESPONSE_HEAD}
      Contact: <sip:[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio 4000 RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv request="ACK">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 8" search_in="body" check_it="true" assign_to="2"/>
    </action>
  </recv>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="1,2"/>
</scenario>
"""

UAC_OFFERLESS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="offer-less uac">
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
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="183">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 8" search_in="body" check_it="true" assign_to="1"/>
    </action>
  </recv>
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
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <pause milliseconds="200"/>
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
  <Reference variables="1"/>
</scenario>
"""


def test_offerless_invite_with_early_media_answer_travels_in_the_ack(tmp_path: Path) -> None:
    sipp = require_tool("sipp", "sip-tester")

    async def scenario() -> None:
        gateway, passwords = await _started(tmp_path, GatewayConfig(DOMAIN))
        assert gateway.address is not None
        phone = SipUserAgent("bob", passwords["bob"], DOMAIN, gateway.address)
        (tmp_path / "uas.xml").write_text(UAS_EARLY)
        (tmp_path / "uac.xml").write_text(UAC_OFFERLESS)
        uas_port = free_udp_port()
        try:
            uas = await _sipp(
                sipp, ["-sf", str(tmp_path / "uas.xml"), "-i", "127.0.0.1", "-p", str(uas_port)],
                tmp_path,
            )  # fmt: skip
            await phone.start()
            await phone.register(contact=f"<sip:bob@127.0.0.1:{uas_port}>")
            uac = await _sipp(
                sipp,
                ["-sf", str(tmp_path / "uac.xml"), f"127.0.0.1:{gateway.address[1]}", "-s", "bob",
                 "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port())],
                tmp_path,
            )  # fmt: skip
            # The UAC saw the 183's SDP; the UAS saw no offer, then the answer in the ACK.
            assert await asyncio.wait_for(uac.wait(), 40) == 0
            assert await asyncio.wait_for(uas.wait(), 20) == 0
            assert gateway.statistics().active_calls == 0
        finally:
            await phone.close()
            await gateway.stop()

    asyncio.run(scenario())

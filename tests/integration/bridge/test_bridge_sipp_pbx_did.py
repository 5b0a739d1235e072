"""A P2P peer's call reaches a PBX on a registration trunk as a call to its DID (DID in To).

sipp 3.6 is the PBX, in two processes as a PBX with a separate registrar
client would be: ``scenarios/pbx_register.xml`` registers the trunk account
``pbx`` (MD5 digest) with its Contact naming the port of
``scenarios/pbx_did_uas.xml``, which answers only an INVITE whose To header
and Request-URI name the DID 4930777 (sipp's ``ereg check_it``: anything
else fails the call and sipp exits non-zero), answers PCMU with ``-rtp_echo``
(what reaches its media port goes back) and waits for the BYE.

The gateway owns the trunk (``RegistrationTrunk("pbx", ("+49 30 777",))``)
and hosts a P2P identity for that number: its bridge, registered as the
bridge account ``p2p``, rings ``+4930777@gw.test`` for every P2P call to that
identity, and the gateway's DID route sends it to the PBX's registered
Contact. The P2P peer (aiortc calls service, 660 Hz, PCMU) dials that
identity (signalling in memory, as in the other bridge tests).

What must hold: the call is answered; the peer hears its own 660 Hz echoed by
the PBX (FFT: peer -> bridge -> gateway anchor -> PBX -> back); the peer's
hang-up reaches the PBX as BYE; the PBX's sipp exits 0 (it saw the DID in To
and in the Request-URI, and the whole dialog) and its message trace holds
the INVITE with ``To: <sip:4930777@gw.test>``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import BridgedCallService, BridgeUserAgent, SipP2pBridge
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.trunks import RegistrationTrunk
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav
from tests.harness.tools import require_tool
from tests.integration.bridge.board import Board
from tests.integration.bridge.test_bridge_call_loopback import assert_tone, loopback_ice

pytestmark = pytest.mark.interop
DOMAIN = "gw.test"
DID = "+49 30 777"  # the trunk's DID as configured; scenarios/pbx_did_uas.xml checks 4930777
DID_IDENTITY = "did-4930777-hosted-identity"  # the P2P identity the gateway hosts for it
PEER_ID = "peer-identity"
SCENARIOS = Path(__file__).parent / "scenarios"
WAIT = 20.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def sipp(binary: str, cwd: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "timeout", "40", binary, *args, "-i", "127.0.0.1", "-m", "1", "-nostdin",
        "-timeout", "30", "-timeout_error",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=cwd,
    )  # fmt: skip


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, errors = await asyncio.wait_for(process.communicate(), 45)
    assert process.returncode is not None
    return process.returncode, errors.decode(errors="replace")[-800:]


async def scenario(binary: str, tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, pbx_password = store.add("pbx", None, randbytes=os.urandom)
    _, bridge_password = store.add("p2p", None, randbytes=os.urandom)
    config = GatewayConfig(
        DOMAIN,
        digest_algorithms=(Algorithm.MD5,),  # sipp 3.6 answers MD5 challenges only
        registration_trunks=(RegistrationTrunk("pbx", (DID,)),),
        # sipp's UAS takes any new Call-ID for a call: an OPTIONS ping would be a failed one.
        keepalive_interval=300.0,
    )
    gateway = SipGateway(config, store)
    await gateway.start()
    assert gateway.address is not None
    server = f"{gateway.address[0]}:{gateway.address[1]}"
    uas_port = free_udp_port()
    pbx = await sipp(
        binary, tmp_path, "-sf", str(SCENARIOS / "pbx_did_uas.xml"), "-p", str(uas_port),
        "-mp", str(free_udp_port()), "-rtp_echo", "-trace_msg",
    )  # fmt: skip
    bridge_ua = BridgeUserAgent("p2p", bridge_password, DOMAIN, gateway.address)
    board = Board((DID_IDENTITY, PEER_ID))
    pcmu = CallConfig(audio_codecs=("PCMU",))
    try:
        register = await sipp(
            binary, tmp_path, "-sf", str(SCENARIOS / "pbx_register.xml"), server,
            "-s", "pbx", "-au", "pbx", "-ap", pbx_password, "-key", "uas_port", str(uas_port),
            "-p", str(free_udp_port()),
        )  # fmt: skip
        status, errors = await finished(register)
        assert status == 0, errors
        assert [b.contact for b in gateway.registrar.bindings("pbx", gateway_now(gateway))]
        await bridge_ua.start()
        await bridge_ua.register()
        hosted = BridgedCallService(DID_IDENTITY, pcmu, board.sender(DID_IDENTITY))
        async with (
            hosted,
            CallService(PEER_ID, pcmu, board.sender(PEER_ID)) as peer,
            asyncio.TaskGroup() as group,
        ):
            board.services = {DID_IDENTITY: hosted, PEER_ID: peer}
            tasks = [group.create_task(board.pump(name)) for name in board.queues]
            # This bridge stands for the DID: every P2P call to its identity rings the number.
            bridge = SipP2pBridge(hosted, bridge_ua, "+4930777")
            tasks.append(group.create_task(bridge.run()))
            media = CallMedia(ToneSource(660.0), tmp_path / "peer.wav")
            call_id = await peer.dial(DID_IDENTITY, media)
            async with asyncio.timeout(WAIT):
                await peer.wait_state(call_id, {CallState.ANSWERED})
                await peer.wait_first_frame(call_id)
            await asyncio.sleep(2.0)  # the echo comes back for ~2 s
            await peer.hangup(call_id)
            status, errors = await finished(pbx)  # exits after the BYE's 200
            events = []
            while not bridge.events.empty():
                events.append(bridge.events.get_nowait())
            for task in tasks:
                task.cancel()
        assert status == 0, (errors, events)
    finally:
        if pbx.returncode is None:
            pbx.kill()
            await pbx.wait()
        await bridge_ua.close()
        await gateway.stop()


def gateway_now(gateway: SipGateway) -> float:
    return gateway._now()


@pytest.mark.slow
def test_p2p_peer_reaches_a_registration_trunk_pbx_with_its_did_in_to(tmp_path: Path) -> None:
    binary = require_tool("sipp", "sip-tester")
    with loopback_ice():
        asyncio.run(scenario(binary, tmp_path))
    traces = list(tmp_path.glob("pbx_did_uas_*_messages.log"))
    assert len(traces) == 1, traces
    trace = traces[0].read_text(errors="replace")
    invite = trace[trace.index("INVITE sip:") :]
    assert re.search(r"^To: <sip:4930777@gw\.test>", invite, re.MULTILINE), invite[:600]
    samples, rate = read_wav(tmp_path / "peer.wav")
    assert_tone(samples, rate, 660.0)  # its own tone, echoed by the PBX through the bridge

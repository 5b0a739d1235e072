"""End to end on loopback: a P2P peer calls hosted ``alice`` (her SIP phone rings), and back.

Real parts only: the SIP gateway (registrar, forking B2BUA, RTP anchor) on
port 0, our SIP UA registered as ``alice`` (auto-answer, 440 Hz PCMU tone,
RFC 4733 digits), the bridge (its own UA account at the gateway, a calls
service for alice's P2P identity) and a P2P peer's calls service (aiortc,
660 Hz), the two calls services signalling in memory. Each side's recording
must hold the other's tone (FFT), the digits must reach the bridge's call
events and the peer's (``CallUpdate.dtmf``) in order, the peer's digits must
reach the phone as RFC 4733 events in order, and the peer's hang-up must end
the phone's call (BYE).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import aioice.ice
import numpy as np
import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import (
    BridgedCallService,
    BridgeEvent,
    BridgeUserAgent,
    SipP2pBridge,
)
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.message import Header
from p2pnode.gateways.sip.rtp import dtmf_schedule
from p2pnode.gateways.sip.useragent import SipUserAgent, UaCall, UaError
from p2pnode.sessions.call import CallDirection, CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav, spectrum
from tests.integration.bridge.board import Board

DOMAIN = "gw.test"
ALICE_ID = "alice-hosted-identity"
PEER_ID = "peer-identity"
WAIT = 15.0
ENDED = {
    CallState.DECLINED,
    CallState.BUSY,
    CallState.NO_ANSWER,
    CallState.CANCELLED,
    CallState.HUNG_UP,
    CallState.REFUSED,
    CallState.FAILED,
}


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


async def reinvite(ua: SipUserAgent, call: UaCall, direction: str) -> int:
    """A re-INVITE in the phone's dialog (RFC 3264 §8.4 hold with a=sendonly), ACKed."""
    port = int(call.rtp.get_extra_info("sockname")[1])
    body = ua._sdp(port).replace(b"a=sendrecv", f"a={direction}".encode())
    call.dialog, request = call.dialog.create_request(
        "INVITE",
        via=ua.via(),
        branch_id=ua.token(),
        extra=(Header("Contact", ua.contact()), Header("Content-Type", "application/sdp")),
        body=body,
    )
    response = await ua.transaction(request, call.destination)
    _, ack = call.dialog.create_request(
        "ACK", via=ua.via(), branch_id=ua.token(), cseq=request.cseq.number
    )
    ua.stack.transport.send(ack, call.destination, reliable=False)
    return response.status


def assert_tone(samples: np.ndarray, rate: int, expected_hz: float) -> None:
    assert samples.size > rate, f"recording too short: {samples.size / rate:.2f} s"
    found = spectrum(samples[int(0.4 * rate) :], rate)
    assert abs(found.dominant_hz - expected_hz) < 8, found
    assert found.dominance > 20, found
    assert found.rms > 0.02, found


async def scenario(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    # The login the P2P peer is known by at this gateway; the bridge is its device.
    _, bridge_password = store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN), store)
    await gateway.start()
    assert gateway.address is not None
    phone = SipUserAgent("alice", alice_password, DOMAIN, gateway.address)
    bridge_ua = BridgeUserAgent("bob", bridge_password, DOMAIN, gateway.address)
    board = Board((ALICE_ID, PEER_ID))
    config = CallConfig(audio_codecs=("PCMU",))
    try:
        await phone.start()
        await phone.register()
        await bridge_ua.start()
        await bridge_ua.register()
        hosted = BridgedCallService(ALICE_ID, config, board.sender(ALICE_ID))
        async with (
            hosted,
            CallService(
                PEER_ID,
                replace(config, auto_answer=True),
                board.sender(PEER_ID),
                answer_media=lambda: CallMedia(ToneSource(550.0), tmp_path / "peer2.wav"),
            ) as peer,
            asyncio.TaskGroup() as group,
        ):
            board.services = {ALICE_ID: hosted, PEER_ID: peer}
            pumps = [group.create_task(board.pump(name)) for name in (ALICE_ID, PEER_ID)]
            peers = {"bob": PEER_ID}
            bridge = SipP2pBridge(hosted, bridge_ua, "alice", peers=peers.get, ring_timeout=2.0)
            serving = group.create_task(bridge.run())
            events: list[BridgeEvent] = []
            call_id = await peer.dial(ALICE_ID, CallMedia(ToneSource(660.0), tmp_path / "peer.wav"))
            async with asyncio.timeout(WAIT):
                ringing = await phone.incoming.get()  # the phone rang and auto-answered
                await peer.wait_state(call_id, {CallState.ANSWERED})
            await ringing.play_tone(440.0, 2.0)
            assert ringing.remote_media is not None
            sequence = 5000
            for number, digit in enumerate("42#"):
                for _, packet in dtmf_schedule(
                    digit,
                    payload_type=101,
                    ssrc=0xD7,
                    first_sequence=sequence,
                    timestamp=80_000 + 8000 * number,
                ):
                    ringing.rtp.sendto(packet.encode(), ringing.remote_media)
                    sequence += 1
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            # The peer keys digits: RFC 4733 events in the phone's stream.
            for digit in "70":
                await peer.send_dtmf(call_id, digit)
            for _ in range(int(WAIT / 0.02)):  # the UA's RTP has no event to wait on
                if sum(event.end for event in ringing.events) >= 6:  # 3 end packets each
                    break
                await asyncio.sleep(0.02)
            ends = [event.event for event in ringing.events if event.end]
            to_phone = [ends[0], *(b for a, b in itertools.pairwise(ends) if b != a)]
            # Hold from the phone: the P2P call stays answered, the bridge stops sending.
            assert await reinvite(phone, ringing, "sendonly") == 200
            await asyncio.sleep(0.3)  # what was in flight lands
            before_hold = len(ringing.received)
            await asyncio.sleep(0.6)
            held_frames = len(ringing.received) - before_hold
            assert peer.state(call_id) is CallState.ANSWERED
            assert await reinvite(phone, ringing, "sendrecv") == 200
            await asyncio.sleep(0.6)
            resumed_frames = len(ringing.received) - before_hold - held_frames
            await peer.hangup(call_id)
            peer_digits: list[str] = []  # the digits in the peer's own call events
            async with asyncio.timeout(WAIT):
                while (
                    update := await peer.wait_update()
                ).call_id != call_id or update.state is not CallState.HUNG_UP:
                    if update.call_id == call_id and update.dtmf is not None:
                        peer_digits.append(update.dtmf)
            async with asyncio.timeout(WAIT):
                await ringing.ended.wait()  # the bridge sent BYE to the phone
                while "ended" not in {event.what for event in events}:
                    events.append(await bridge.events.get())
            digits = "".join(d.digit for d in bridge.digits[call_id])

            # The reverse: alice's phone dials bob, the bridge calls the peer as alice.
            async with asyncio.timeout(WAIT):
                outgoing = await phone.call("bob")
            await outgoing.play_tone(440.0, 1.5)
            await asyncio.sleep(0.2)
            await outgoing.hangup()
            async with asyncio.timeout(WAIT):
                update = await peer.wait_state(None, {CallState.HUNG_UP})
                while update.call_id == call_id:  # the first call's end, still queued
                    update = await peer.wait_state(None, {CallState.HUNG_UP})
                while [event.what for event in events].count("ended") < 2:
                    events.append(await bridge.events.get())

            # No phone registered: the gateway answers the bridge 480, the peer sees a decline.
            await phone.register(expires=0)
            unreachable = await peer.dial(ALICE_ID, CallMedia(ToneSource(660.0)))
            async with asyncio.timeout(WAIT):
                final = await peer.wait_state(unreachable, ENDED)
            # A peer that never answers: the phone gets 480 after the ring timeout; a login
            # the bridge has no peer for: 404. The bridge keeps serving.
            await phone.register()
            peers["bob"] = "nobody-knows-this-peer"
            with pytest.raises(UaError) as refused:
                await phone.call("bob")
            del peers["bob"]
            with pytest.raises(UaError) as unknown:
                await phone.call("bob")
            for task in (*pumps, serving):
                task.cancel()
        kinds = [event.what for event in events]
        samples, rate = read_wav(tmp_path / "peer.wav")
        assert_tone(samples, rate, 440.0)  # the peer heard the phone
        assert_tone(ringing.recording().astype(np.float64) / 32768.0, 8000, 660.0)
        assert digits == "42#"
        assert peer_digits == ["4", "2", "#"]  # carried as DTMF signals, in order
        assert to_phone == [7, 0]  # the peer's digits, in order, as RFC 4733 events
        assert kinds.count("digit-to-phone") == 2
        assert held_frames == 0 and resumed_frames > 15  # 0.6 s at 50 packets/s
        assert kinds.count("hold") == 1 and kinds.count("resume") == 1
        assert update.direction is CallDirection.INCOMING  # hung up by the phone's BYE
        samples, rate = read_wav(tmp_path / "peer2.wav")
        assert_tone(samples, rate, 440.0)
        assert_tone(outgoing.recording().astype(np.float64) / 32768.0, 8000, 550.0)
        assert gateway.statistics().calls_answered == 2
        assert kinds[:2] == ["ringing-phones", "phone-answered"]
        assert final.state is CallState.DECLINED
        assert refused.value.status == 480
        assert unknown.value.status == 404
        assert not serving.done() or serving.cancelled()
        assert kinds.count("digit") == 3
        # PCMU on both legs: the phone's payloads reached aiortc untouched, both ways round.
        for event in (e for e in events if e.what == "ended"):
            counts = dict(item.split("=") for item in event.detail.split())
            assert int(counts["passthrough"]) > 50, event.detail
            assert int(counts["transcoded"]) == 0, event.detail
    finally:
        await phone.close()
        await bridge_ua.close()
        await gateway.stop()


@pytest.mark.slow
def test_peer_calls_hosted_alice_her_phone_rings_tones_and_digits_cross(tmp_path: Path) -> None:
    with loopback_ice():
        asyncio.run(scenario(tmp_path))

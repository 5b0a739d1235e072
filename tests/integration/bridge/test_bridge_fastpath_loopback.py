"""The bridge's fast media path on loopback: ``CallMedia(audio=PhoneCallAudio(leg))``.

A plain RTP "phone" (440 Hz PCMU) <-> the phone leg <-> a calls service whose
call carries the phone's audio binding <-> a real aiortc peer (660 Hz). Each
side's recording must hold the other's tone (FFT). With PCMU on the WebRTC
leg the peer's RTP must be taken at the receiver (counted, nothing decoded)
and the phone's payloads handed to aiortc untouched; with opus both
directions are transcoded and nothing is tapped. The calls service must
still see the call's audio (first-frame event, frame count) though no frame
reaches its track. A binding told its connection is superseded
(``heard() -> False``) passes nothing to the phone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from p2pnode.gateways.sip.bridge_media import BridgeCodec, PhoneReceiver, PhoneSender
from p2pnode.gateways.sip.bridge_tracks import (
    MediaClock,
    PhoneCallAudio,
    PhoneRtpLeg,
    TrackStatistics,
)
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav
from tests.integration.bridge.test_bridge_media_loopback import (
    PEER_HZ,
    PHONE_HZ,
    PT_DTMF,
    PT_PCMU,
    Phone,
    ToneTrack,
    assert_tone,
    loopback_ice,
    prefer,
    send_phone_audio,
)

WAIT = 15.0


async def _open_leg(phone: Phone) -> tuple[PhoneRtpLeg, tuple[str, int], asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
    leg = PhoneRtpLeg(
        PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF),
        PhoneSender(ssrc=0xFA57, payload_type=PT_PCMU, first_sequence=3, first_timestamp=5),
        BridgeCodec.PCMU,
        remote=transport.get_extra_info("sockname")[:2],
    )
    return leg, await leg.open(), transport


async def _calls_service_call(tmp: Path) -> tuple[TrackStatistics, Phone, Path, int, int]:
    """The bridge side dials the peer through a real CallService with the phone's binding."""
    queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {
        "bridge": asyncio.Queue(),
        "peer": asyncio.Queue(),
    }
    services: dict[str, CallService] = {}

    def sender(me: str):  # type: ignore[no-untyped-def]
        async def send(peer: str, payload: bytes) -> None:
            queues[peer].put_nowait((me, payload))

        return send

    async def pump(me: str) -> None:
        while True:
            origin, payload = await queues[me].get()
            await services[me].handle_signal(origin, payload)

    heard_by_peer = tmp / "peer.wav"
    phone = Phone()
    leg, address, phone_transport = await _open_leg(phone)
    audio = PhoneCallAudio(leg)
    try:
        async with (
            CallService("bridge", CallConfig(audio_codecs=("PCMU",)), sender("bridge")) as bridge,
            CallService(
                "peer", CallConfig(audio_codecs=("PCMU",), auto_answer=True), sender("peer"),
                answer_media=lambda: CallMedia(ToneSource(PEER_HZ), heard_by_peer),
            ) as peer,
            asyncio.TaskGroup() as group,
        ):  # fmt: skip
            services.update({"bridge": bridge, "peer": peer})
            pumps = [group.create_task(pump(name)) for name in queues]
            call_id = await bridge.dial("peer", CallMedia(audio=audio))
            async with asyncio.timeout(WAIT):
                await bridge.wait_state(call_id, {CallState.ANSWERED})
                await send_phone_audio(phone, address, "")
                await bridge.wait_first_frame(call_id)  # heard through the binding
            frames = bridge.statistics(call_id).frames
            await bridge.hangup(call_id)
            leg.close()
            for task in pumps:
                task.cancel()
    finally:
        leg.close()
        phone_transport.close()
    direct = audio.direct.sent if audio.direct is not None else 0
    return audio.statistics(), phone, heard_by_peer, frames, direct


@pytest.mark.slow
def test_a_calls_service_call_with_the_phone_binding_passes_g711_through(tmp_path: Path) -> None:
    with loopback_ice():
        stats, phone, heard_by_peer, frames, direct = asyncio.run(_calls_service_call(tmp_path))
    samples, rate = read_wav(heard_by_peer)
    assert_tone(samples, rate, PHONE_HZ)
    assert_tone(phone.recording(), 8000, PEER_HZ)
    # Both directions untouched: the peer's RTP taken at the receiver, nothing decoded.
    assert stats.peer_passthrough > 50
    assert stats.peer_transcoded == 0
    assert stats.passthrough_frames > 50
    assert stats.transcoded_frames == 0
    # The phone's frames went out on the media clock, not through aiortc's sender task.
    assert direct == stats.passthrough_frames  # (silence slots included)
    # The service counted the tapped packets as the call's audio.
    assert frames >= stats.peer_passthrough > 0
    # One rewritten stream at the phone: our SSRC, consecutive sequence numbers.
    assert {p.ssrc for p in phone.received} == {0xFA57}
    sequences = [p.sequence for p in phone.received]
    assert sequences == list(range(3, 3 + len(sequences)))


async def _bare_call(
    webrtc: BridgeCodec, current: bool
) -> tuple[TrackStatistics, Phone, PhoneCallAudio, set[str | None]]:
    """The binding on a bare connection, as the calls service drives it."""
    phone = Phone()
    leg, address, phone_transport = await _open_leg(phone)
    audio = PhoneCallAudio(leg)
    bridge_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peer_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    bridge_pc.addTrack(audio.track())
    peer_pc.addTrack(ToneTrack())
    heard: list[int] = []

    def on_track(track: MediaStreamTrack) -> None:
        transceiver = next(t for t in bridge_pc.getTransceivers() if t.receiver.track is track)
        receiving.append(asyncio.ensure_future(audio.receive(track, transceiver, seen)))

    def seen() -> bool:
        heard.append(1)
        return current

    receiving: list[asyncio.Future[None]] = []
    bridge_pc.on("track", on_track)
    try:
        prefer(bridge_pc, f"audio/{webrtc.value}")
        await bridge_pc.setLocalDescription(await bridge_pc.createOffer())
        await peer_pc.setRemoteDescription(bridge_pc.localDescription)
        await peer_pc.setLocalDescription(await peer_pc.createAnswer())
        answer = peer_pc.localDescription
        await bridge_pc.setRemoteDescription(RTCSessionDescription(answer.sdp, answer.type))
        audio.negotiated(f"audio/{webrtc.value}")
        mids = _record_mids(peer_pc)
        async with asyncio.timeout(WAIT):
            await send_phone_audio(phone, address, "")
            leg.close()
            await asyncio.gather(*receiving)
        assert heard, "the binding never reported audio"
    finally:
        await bridge_pc.close()
        await peer_pc.close()
        phone_transport.close()
    return audio.statistics(), phone, audio, mids


def _record_mids(pc: RTCPeerConnection) -> set[str | None]:
    """The MID header extension of every RTP packet ``pc`` receives (RFC 8843 demux)."""
    mids: set[str | None] = set()
    receiver = pc.getReceivers()[0]
    original = receiver._handle_rtp_packet

    async def handle(packet: Any, arrival_time_ms: int = 0) -> None:
        mids.add(packet.extensions.mid)
        await original(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]
    return mids


@pytest.mark.slow
def test_opus_is_transcoded_both_ways_and_nothing_is_tapped() -> None:
    with loopback_ice():
        stats, phone, audio, mids = asyncio.run(_bare_call(BridgeCodec.OPUS, current=True))
    assert_tone(phone.recording(), 8000, PEER_HZ)
    assert stats.peer_passthrough == 0
    assert stats.peer_transcoded > 50
    assert stats.transcoded_frames > 50
    assert stats.passthrough_frames == 0
    assert audio.direct is None  # aiortc encodes: its own sender loop sends
    assert mids == {"0"}


@pytest.mark.slow
def test_a_superseded_connection_passes_nothing_to_the_phone() -> None:
    with loopback_ice():
        stats, phone, audio, mids = asyncio.run(_bare_call(BridgeCodec.PCMU, current=False))
    assert stats.peer_passthrough == 0
    assert stats.peer_transcoded == 0
    assert phone.received == []
    # The phone -> peer direction is not this flag's: it went out directly, with the MID.
    assert audio.direct is not None and audio.direct.sent > 50
    assert mids == {"0"}


def test_the_media_clock_releases_waiters_in_order_and_never_early() -> None:
    async def run() -> tuple[list[int], list[float]]:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop, tick=0.01)
        start = loop.time()
        whens = [start + d for d in (0.045, 0.005, 0.025, 0.025, 0.0)]
        order: list[int] = []
        early: list[float] = []

        async def wait(index: int) -> None:
            await clock.wait_until(whens[index])
            order.append(index)
            early.append(whens[index] - loop.time())

        cancelled = clock.wait_until(start + 0.03)
        cancelled.cancel()  # a recv() cancelled mid-wait must not break the clock
        await asyncio.gather(*(wait(index) for index in range(len(whens))))
        return order, early

    order, early = asyncio.run(run())
    assert order == [4, 1, 2, 3, 0]
    assert max(early) <= 0.005 + 1e-9  # at most half a tick before its time


def test_a_leg_whose_owner_closed_its_socket_leaves_the_clock_to_the_others() -> None:
    async def run() -> tuple[int, bool, int]:
        a_phone, b_phone = Phone(), Phone()
        a, _, a_transport = await _open_leg(a_phone)
        b, _, b_transport = await _open_leg(b_phone)
        try:
            for leg in (a, b):  # the first frame goes at once, the others at their 20 ms slots
                for _ in range(5):
                    leg.from_peer(bytes([0xFF]) * 160)
            assert a.transport is not None
            a.transport.close()  # the UA ended a's call under the leg
            await asyncio.sleep(0.3)  # 4 slots of 20 ms, and loopback delivery
            return (
                len(b_phone.received),
                a.is_closed,
                MediaClock.of(asyncio.get_running_loop()).failed,
            )
        finally:
            b.close()
            a_transport.close()
            b_transport.close()

    b_received, a_closed, failed = asyncio.run(run())
    assert b_received == 5  # b's clock-paced frames still went out
    assert a_closed
    assert failed == 0  # a was dropped as closed, not as a failure

"""The media bridge on loopback: a plain RTP phone <-> bridge <-> a real aiortc peer.

The "phone" is a UDP socket sending a 440 Hz PCMU tone (plus RFC 4733 digits)
and recording what comes back; the peer is a bare ``RTCPeerConnection`` sending
660 Hz. Each side's recording must hold the other side's tone (FFT). With PCMU
on the WebRTC leg the phone's payloads must pass through untouched (counted);
with opus the bridge must transcode.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import aioice.ice
import av
import numpy as np
import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs.g711 import PcmuEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from p2pnode.gateways.sip.bridge_media import (
    BridgeCodec,
    DtmfDigit,
    PhoneReceiver,
    PhoneSender,
    ReceiverStatistics,
    choose_media_path,
)
from p2pnode.gateways.sip.bridge_tracks import PhoneAudioTrack, PhoneRtpLeg, TrackStatistics
from p2pnode.gateways.sip.rtp import RtpDecodeError, RtpPacket, dtmf_schedule
from tests.harness.audio import spectrum

PHONE_HZ = 440.0
PEER_HZ = 660.0
SECONDS = 2.0
PT_PCMU = 0
PT_DTMF = 101


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """aioice skips 127.0.0.1 when gathering host candidates; allow it for these tests."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def tone_frame(frequency: float, start: int, count: int, rate: int) -> av.AudioFrame:
    index = np.arange(start, start + count, dtype=np.float64)
    samples = (0.3 * 32767 * np.sin(2 * math.pi * frequency * index / rate)).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = start
    frame.time_base = fractions.Fraction(1, rate)
    return frame


class ToneTrack(MediaStreamTrack):
    """The peer's microphone: 660 Hz at 48 kHz, 20 ms frames paced on the loop clock."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._position = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._position / 48_000 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = tone_frame(PEER_HZ, self._position, 960, 48_000)
        self._position += 960
        return frame


class Phone(asyncio.DatagramProtocol):
    """A plain RTP phone: records the payloads it receives."""

    def __init__(self) -> None:
        self.received: list[RtpPacket] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        with contextlib.suppress(RtpDecodeError):
            self.received.append(RtpPacket.decode(data))

    def recording(self) -> np.ndarray:
        decoder = av.CodecContext.create("pcm_mulaw", "r")
        decoder.layout = "mono"
        decoder.sample_rate = 8000
        chunks = []
        for packet in sorted(self.received, key=lambda p: p.sequence):
            for frame in decoder.decode(av.Packet(packet.payload)):
                chunks.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(chunks).astype(np.float64) / 32768.0


async def send_phone_audio(phone: Phone, target: tuple[str, int], digits: str) -> None:
    """440 Hz PCMU every 20 ms with mild reordering, then digits as RFC 4733 events."""
    assert phone.transport is not None
    encoder = PcmuEncoder()
    rng = random.Random(15)
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames = int(SECONDS / 0.02)
    held: RtpPacket | None = None
    for index in range(frames):
        payloads, _ = encoder.encode(tone_frame(PHONE_HZ, index * 160, 160, 8000))
        packet = RtpPacket(PT_PCMU, (1000 + index) & 0xFFFF, index * 160, 0x5EED, payloads[0])
        if held is None and rng.random() < 0.05:
            held = packet  # swap with the next one: the jitter buffer must reorder
        else:
            phone.transport.sendto(packet.encode(), target)
            if held is not None:
                phone.transport.sendto(held.encode(), target)
                held = None
        await asyncio.sleep(max(0.0, start + 0.02 * (index + 1) - loop.time()))
    sequence = 1000 + frames
    for number, digit in enumerate(digits):
        schedule = dtmf_schedule(
            digit,
            payload_type=PT_DTMF,
            ssrc=0x5EED,
            first_sequence=sequence,
            timestamp=(frames + 20 * number) * 160,
        )
        for _, packet in schedule:
            phone.transport.sendto(packet.encode(), target)
            await asyncio.sleep(0.02)
        sequence += len(schedule)


async def collect(track: MediaStreamTrack, sink: list[np.ndarray], rates: list[int]) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        assert isinstance(frame, av.AudioFrame)
        channels = len(frame.layout.channels)
        sink.append(frame.to_ndarray().reshape(-1, channels).mean(axis=1) / 32768.0)
        rates.append(frame.sample_rate)


def prefer(pc: RTCPeerConnection, mime: str) -> None:
    codecs = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == mime]
    for transceiver in pc.getTransceivers():
        transceiver.setCodecPreferences(codecs)


@dataclass(frozen=True)
class BridgeRun:
    phone: Phone
    peer_audio: np.ndarray
    peer_rate: int
    track: TrackStatistics
    receiver: ReceiverStatistics
    digits: str


async def bridge_call(webrtc: BridgeCodec, digits: str) -> BridgeRun:
    loop = asyncio.get_running_loop()
    path = choose_media_path(BridgeCodec.PCMU, webrtc)
    heard: list[DtmfDigit] = []
    receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF)
    sender = PhoneSender(ssrc=0xB41D6E, payload_type=PT_PCMU, first_sequence=7, first_timestamp=99)
    phone = Phone()
    phone_transport, _ = await loop.create_datagram_endpoint(
        lambda: phone, local_addr=("127.0.0.1", 0)
    )
    leg = PhoneRtpLeg(
        receiver,
        sender,
        BridgeCodec.PCMU,
        remote=phone_transport.get_extra_info("sockname")[:2],
        on_digit=heard.append,
    )
    bridge_addr = await leg.open()
    bridge_track = PhoneAudioTrack(receiver, path)
    bridge_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peer_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    bridge_pc.addTrack(bridge_track)
    peer_pc.addTrack(ToneTrack())
    peer_audio: list[np.ndarray] = []
    peer_rates: list[int] = []
    remote_tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    bridge_pc.on("track", remote_tracks.put_nowait)
    peer_pc.on("track", remote_tracks.put_nowait)
    try:
        prefer(bridge_pc, f"audio/{webrtc.value}")
        await bridge_pc.setLocalDescription(await bridge_pc.createOffer())
        await peer_pc.setRemoteDescription(bridge_pc.localDescription)
        await peer_pc.setLocalDescription(await peer_pc.createAnswer())
        answer = peer_pc.localDescription
        await bridge_pc.setRemoteDescription(RTCSessionDescription(answer.sdp, answer.type))
        async with asyncio.timeout(20), asyncio.TaskGroup() as group:
            first = await remote_tracks.get()
            second = await remote_tracks.get()
            # The peer's track arrives at the bridge; the bridge's at the peer.
            bridge_side = next(t for t in (first, second) if _belongs(bridge_pc, t))
            peer_side = first if second is bridge_side else second
            run = group.create_task(leg.run(bridge_side))
            record = group.create_task(collect(peer_side, peer_audio, peer_rates))
            await send_phone_audio(phone, bridge_addr, digits)
            await asyncio.sleep(0.3)
            leg.close()
            await run
            record.cancel()
    finally:
        await bridge_pc.close()
        await peer_pc.close()
        phone_transport.close()
    return BridgeRun(
        phone=phone,
        peer_audio=np.concatenate(peer_audio),
        peer_rate=peer_rates[-1],
        track=bridge_track.statistics(),
        receiver=receiver.statistics(),
        digits="".join(d.digit for d in heard),
    )


def _belongs(pc: RTCPeerConnection, track: MediaStreamTrack) -> bool:
    return any(t.receiver.track is track for t in pc.getTransceivers())


def assert_tone(samples: np.ndarray, rate: int, expected_hz: float) -> None:
    assert samples.size > rate, f"recording too short: {samples.size / rate:.2f} s"
    found = spectrum(samples[int(0.5 * rate) :], rate)
    assert abs(found.dominant_hz - expected_hz) < 5, found
    assert found.dominance > 20, found
    assert found.rms > 0.02, found


@pytest.mark.slow
@pytest.mark.parametrize("webrtc", [BridgeCodec.PCMU, BridgeCodec.OPUS])
def test_tones_cross_the_bridge_both_ways(webrtc: BridgeCodec) -> None:
    with loopback_ice():
        result = asyncio.run(bridge_call(webrtc, "19#"))
    # The peer hears the phone, the phone hears the peer.
    assert_tone(result.peer_audio, result.peer_rate, PHONE_HZ)
    assert_tone(result.phone.recording(), 8000, PEER_HZ)
    # The phone sees one rewritten stream: our SSRC, consecutive sequence numbers.
    assert {p.ssrc for p in result.phone.received} == {0xB41D6E}
    sequences = [p.sequence for p in result.phone.received]
    assert sequences == list(range(7, 7 + len(sequences)))
    # Passthrough exactly when both legs are PCMU.
    passthrough = webrtc is BridgeCodec.PCMU
    assert (result.track.passthrough_frames > 50) == passthrough
    assert (result.track.transcoded_frames > 50) != passthrough
    # Every packet the phone sent arrived and was played once (reordered ones too).
    assert result.receiver.received == int(SECONDS / 0.02)
    assert result.receiver.lost == 0
    # Digits from the phone, once each, in order.
    assert result.digits == "19#"

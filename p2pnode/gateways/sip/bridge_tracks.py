"""asyncio/aiortc adapters of the media bridge: the phone's RTP socket and the WebRTC tracks.

aiortc speaks only DTLS-SRTP, so the phone's plain RTP leg is our own UDP
socket (:class:`PhoneRtpLeg`). Its datagrams feed a
:class:`~p2pnode.gateways.sip.bridge_media.PhoneReceiver`; the WebRTC leg pulls
from it through :class:`PhoneAudioTrack`, which hands aiortc the phone's G.711
payload untouched as an ``av.Packet`` when both legs negotiated the same law
(aiortc's ``PcmEncoder.pack`` sends it as is), and a decoded ``av.AudioFrame``
otherwise (aiortc then encodes it, e.g. to opus).

The other direction always arrives decoded (aiortc's receiver has no public
hook for encoded frames): :meth:`PhoneRtpLeg.run` encodes each frame to the
phone's law with aiortc's G.711 encoder (which resamples from opus' 48 kHz)
and hands it to a :class:`~p2pnode.gateways.sip.bridge_media.PhoneSender`,
which paces and rewrites it.

These classes only move bytes and re-arm timers; every decision lives in the
sans-IO cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import av
import numpy as np
from aiortc.codecs.g711 import PcmaEncoder, PcmuEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.codeccontext import AudioCodecContext

from p2pnode.gateways.sip.bridge_media import (
    Audio,
    BridgeCodec,
    DtmfDigit,
    Loss,
    MediaPath,
    PhoneReceiver,
    PhoneSender,
)

__all__ = [
    "G711_SILENCE",
    "PhoneAudioTrack",
    "PhoneRtpLeg",
    "TrackStatistics",
]

_LOG = logging.getLogger(__name__)
G711_SILENCE = {BridgeCodec.PCMU: 0xFF, BridgeCodec.PCMA: 0xD5}
_G711_DECODER = {BridgeCodec.PCMU: "pcm_mulaw", BridgeCodec.PCMA: "pcm_alaw"}
_PHONE_RATE = 8000
_DEFAULT_SAMPLES = 160  # 20 ms at 8 kHz


@dataclass(frozen=True, slots=True)
class TrackStatistics:
    """How the phone's audio crossed into WebRTC: untouched, decoded, or silence."""

    passthrough_frames: int
    transcoded_frames: int
    silence_frames: int


class PhoneAudioTrack(MediaStreamTrack):
    """The phone's audio as a WebRTC track, paced on the asyncio clock.

    ``recv`` returns one frame per ``ptime`` (the phone's frame size), pulling a
    slot from the jitter buffer each time; a lost slot or an empty buffer
    (hold, start-up) becomes G.711 silence so the peer's clock keeps running.
    """

    kind = "audio"

    def __init__(self, receiver: PhoneReceiver, path: MediaPath) -> None:
        super().__init__()
        if not path.phone_codec.is_g711:
            raise ValueError("the phone leg supports PCMU and PCMA")
        self._receiver = receiver
        self._path = path
        self._time_base = fractions.Fraction(1, _PHONE_RATE)
        self._pts = 0
        self._samples = _DEFAULT_SAMPLES
        self._next_at: float | None = None
        self._decoder = cast(
            AudioCodecContext, av.CodecContext.create(_G711_DECODER[path.phone_codec], "r")
        )
        self._decoder.layout = "mono"
        self._decoder.sample_rate = _PHONE_RATE
        self._passthrough = 0
        self._transcoded = 0
        self._silence = 0

    def statistics(self) -> TrackStatistics:
        return TrackStatistics(self._passthrough, self._transcoded, self._silence)

    def set_webrtc_codec(self, codec: BridgeCodec) -> None:
        """The WebRTC leg's negotiated codec is known: passthrough from now on if it matches."""
        self._path = MediaPath(self._path.phone_codec, codec)

    async def recv(self) -> av.Packet[Any] | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._next_at is None:
            self._next_at = loop.time()
        wait = self._next_at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        now = loop.time()
        slot = self._receiver.pop(now)
        payload: bytes
        if isinstance(slot, Audio) and slot.payload:
            payload = slot.payload
            self._samples = len(payload)  # G.711: one byte per sample
        else:
            assert slot is None or isinstance(slot, Loss) or not slot.payload
            payload = bytes([G711_SILENCE[self._path.phone_codec]]) * self._samples
            self._silence += 1
        pts = self._pts
        self._pts += len(payload)
        self._next_at += len(payload) / _PHONE_RATE
        if now - self._next_at > 0.2:
            self._next_at = now  # the loop stalled: do not burst to catch up
        if self._path.passthrough:
            self._passthrough += 1
            packet = av.Packet(payload)
            packet.pts = pts
            packet.time_base = self._time_base
            return packet
        self._transcoded += 1
        return self._decode(payload, pts)

    def _decode(self, payload: bytes, pts: int) -> av.AudioFrame:
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = self._time_base
        frames = self._decoder.decode(packet)
        if frames:
            frame = frames[0]
            assert isinstance(frame, av.AudioFrame)
        else:  # pragma: no cover - G.711 decodes every packet
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, len(payload)), dtype=np.int16), format="s16", layout="mono"
            )
        frame.sample_rate = _PHONE_RATE
        frame.pts = pts
        frame.time_base = self._time_base
        return frame


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: PhoneRtpLeg) -> None:
        self._leg = leg

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._leg.datagram_received(data, (str(addr[0]), int(str(addr[1]))))


class PhoneRtpLeg:
    """The phone's RTP socket: datagrams in to the receiver, the sender's packets out.

    Symmetric RTP (RFC 4961): once the phone's first valid packet arrives we
    send to its source address, which gets through a NAT in front of the
    phone; until then we send where its SDP said.
    """

    def __init__(
        self,
        receiver: PhoneReceiver,
        sender: PhoneSender,
        codec: BridgeCodec,
        *,
        remote: tuple[str, int] | None = None,
        on_digit: Callable[[DtmfDigit], None] | None = None,
    ) -> None:
        if not codec.is_g711:
            raise ValueError("the phone leg supports PCMU and PCMA")
        self.receiver = receiver
        self.sender = sender
        self._remote = remote
        self._latched = False
        self.on_digit = on_digit
        self._encoder = PcmuEncoder() if codec is BridgeCodec.PCMU else PcmaEncoder()
        self._transport: asyncio.DatagramTransport | None = None
        self._wake = asyncio.Event()
        self.frames_from_peer = 0
        self.held = False  # the phone put us on hold: the peer's audio is not sent

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return self._transport

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    async def open(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self), local_addr=(host, port)
        )
        self._transport = transport
        return self.local_address

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._wake.set()

    def set_remote(self, remote: tuple[str, int]) -> None:
        """A re-INVITE moved the phone's media (resume from hold to a new port)."""
        self._remote = remote
        self._latched = False

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        before = self.receiver.accepted
        digits = self.receiver.datagram(data, now)
        if self.receiver.accepted > before and not self._latched:
            self._remote = source  # RFC 4961 symmetric RTP: latch the source
            self._latched = True
        self._report(digits)

    def _report(self, digits: list[DtmfDigit]) -> None:
        if self.on_digit is not None:
            for digit in digits:
                self.on_digit(digit)

    def send_digit(self, digit: str, payload_type: int, duration_ms: int = 100) -> bool:
        """An RFC 4733 digit to the phone, paced with the audio; False if refused or on hold."""
        if self.held:
            return False
        now = asyncio.get_running_loop().time()
        queued = self.sender.push_digit(digit, payload_type, now, duration_ms)
        self._wake.set()
        return queued

    async def run(self, peer_track: MediaStreamTrack) -> None:
        """Carry the peer's audio to the phone until the track ends or ``close``."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pump(peer_track))
            group.create_task(self._transmit())

    async def _pump(self, peer_track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while self._transport is not None and not self._transport.is_closing():
            try:
                frame = await peer_track.recv()
            except MediaStreamError:
                break
            if not isinstance(frame, av.AudioFrame):
                continue
            payloads, _ = self._encoder.encode(frame)
            if self.held:
                continue
            for payload in payloads:
                self.frames_from_peer += 1
                self.sender.push(payload, loop.time())
            self._wake.set()
        self.close()

    async def _transmit(self) -> None:
        loop = asyncio.get_running_loop()
        while self._transport is not None and not self._transport.is_closing():
            now = loop.time()
            for datagram in self.sender.poll(now):
                if self._remote is not None:
                    self._transport.sendto(datagram, self._remote)
            self._report(self.receiver.poll(now))
            deadlines = [
                d
                for d in (self.sender.next_deadline(), self.receiver.next_deadline())
                if d is not None
            ]
            self._wake.clear()
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

"""asyncio/aiortc adapters of the media bridge: the WebRTC side of a phone's call.

The phone's plain RTP socket is :class:`~p2pnode.gateways.sip.bridge_leg.PhoneRtpLeg`
(re-exported here). The WebRTC leg pulls the phone's audio from its jitter
buffer through :class:`PhoneAudioTrack`, which hands aiortc the phone's
payload untouched as an ``av.Packet`` when both legs negotiated the same
codec (PCMU, PCMA, G.722 or opus: aiortc's encoders' ``pack`` send it as is), and a
decoded ``av.AudioFrame`` otherwise (PyAV decodes PCMU, PCMA, G.722 at 16 kHz
and opus at 48 kHz; aiortc then encodes it for the P2P leg).

The other direction, passthrough: :class:`PhoneCallAudio` (the calls
service's ``CallMedia(audio=...)`` binding) takes the peer's RTP payloads of
the phone's codec at the connection's ``RTCRtpReceiver``, before aiortc's
jitter buffer, decoder thread and track queue, and hands them to the phone
leg's :class:`~p2pnode.gateways.sip.bridge_media.PhoneSender` (rewriting,
pacing). The phone's frames go the other way through a
:class:`~p2pnode.gateways.sip.bridge_direct.DirectRtp` on the media clock
(aiortc's per-frame sender task is left idle). Any other codec pair takes
aiortc's decoding path; the leg re-encodes the peer's audio to the phone's
codec with aiortc's encoders (which resample).

Timers: one :class:`~p2pnode.gateways.sip.bridge_clock.MediaClock` per event
loop ticks every ``TICK`` seconds for every leg and track of every call
(pacing to the phone, DTMF timeouts, RTCP reports, the 20 ms frames to the
peer), instead of one timer per call and direction.

These classes only move bytes and re-arm timers; every decision lives in the
sans-IO cores.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.codeccontext import AudioCodecContext

from p2pnode.gateways.sip.bridge_clock import TICK, MediaClock
from p2pnode.gateways.sip.bridge_direct import DirectRtp
from p2pnode.gateways.sip.bridge_leg import PhoneRtpLeg
from p2pnode.gateways.sip.bridge_media import (
    Audio,
    BridgeCodec,
    Loss,
    MediaPath,
    PhoneReceiver,
    choose_media_path,
)

__all__ = [
    "G711_SILENCE",
    "TICK",
    "MediaClock",
    "PhoneAudioTrack",
    "PhoneCallAudio",
    "PhoneRtpLeg",
    "TrackStatistics",
]

_LOG = logging.getLogger(__name__)
# Silence bytes per codec of a fixed byte rate (one byte per 1/8000 s). G.722: the
# all-ones codeword decodes to |x| <= 17 of 32767 whatever the decoder's state.
G711_SILENCE = {BridgeCodec.PCMU: 0xFF, BridgeCodec.PCMA: 0xD5, BridgeCodec.G722: 0xFF}
# FFmpeg (PyAV) decoder of each phone codec and the rate it decodes at: G.722
# samples at 16 kHz though its RTP clock is 8000 (RFC 3551 §4.5.2); opus at 48 kHz.
_DECODER = {
    BridgeCodec.PCMU: ("pcm_mulaw", 8000),
    BridgeCodec.PCMA: ("pcm_alaw", 8000),
    BridgeCodec.G722: ("g722", 16000),
    BridgeCodec.OPUS: ("libopus", 48000),
}
_FRAME_SECONDS = 0.02  # the frame a lost or undecodable non-G.711 packet stands for
# RFC 6716 §3.1: TOC config 31 (CELT fullband, 20 ms), mono, one frame; decodes to
# 960 samples of silence. Stands for a lost opus slot when opus passes through.
_OPUS_SILENCE = b"\xf8\xff\xfe"
_PHONE_RATE = 8000
_DEFAULT_SAMPLES = 160  # 20 ms at 8 kHz
_STALL = 0.2  # a track this far behind its schedule restarts it instead of bursting
# RFC 3551 §6 static payload types: what the phone's law is called on any RTP leg.
_STATIC_TYPE = {BridgeCodec.PCMU: 0, BridgeCodec.PCMA: 8, BridgeCodec.G722: 9}
# The track's sample units per RTP clock unit: G.722 samples at 16 kHz on an 8000 clock.
_PTS_DIVISOR = {BridgeCodec.G722: 2}


@dataclass(frozen=True, slots=True)
class TrackStatistics:
    """How audio crossed the bridge: untouched, decoded, or silence.

    ``passthrough_frames``/``transcoded_frames``/``silence_frames``: phone ->
    peer. ``peer_passthrough``: the peer's payloads taken at the RTP
    receiver; ``peer_transcoded``: peer frames aiortc decoded and we re-encoded;
    ``direct_frames``: phone -> peer frames a :class:`DirectRtp` sent (the rest
    of the passthrough frames went through aiortc's sender task).
    """

    passthrough_frames: int
    transcoded_frames: int
    silence_frames: int
    peer_passthrough: int = 0
    peer_transcoded: int = 0
    direct_frames: int = 0


class PhoneAudioTrack(MediaStreamTrack):
    """The phone's audio as a WebRTC track, paced on the asyncio clock.

    ``recv`` returns one frame per ``ptime`` (the phone's frame size), pulling a
    slot from the jitter buffer each time; a lost slot or an empty buffer
    (hold, start-up) becomes G.711 silence so the peer's clock keeps running.
    """

    kind = "audio"

    def __init__(self, receiver: PhoneReceiver, path: MediaPath) -> None:
        super().__init__()
        self._receiver = receiver
        self._path = path
        self._rate = _DECODER[path.phone_codec][1]
        self._pts = 0
        self._samples = _DEFAULT_SAMPLES
        self._next_at: float | None = None
        self._clock: MediaClock | None = None
        self._muted = False
        self._set_decoder(path.phone_codec)
        self._passthrough = 0
        self._transcoded = 0
        self._silence = 0

    def statistics(self) -> TrackStatistics:
        return TrackStatistics(self._passthrough, self._transcoded, self._silence)

    def _set_decoder(self, codec: BridgeCodec) -> None:
        name, rate = _DECODER[codec]
        self._pts = self._pts * rate // self._rate  # the same instant in the new clock
        self._rate = rate
        self._time_base = fractions.Fraction(1, rate)
        self._decoder = cast(AudioCodecContext, av.CodecContext.create(name, "r"))
        self._decoder.layout = "stereo" if codec is BridgeCodec.OPUS else "mono"
        self._decoder.sample_rate = rate
        # aiortc's encoders take s16: opus decodes to float stereo, made s16 mono here.
        self._to_s16 = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def set_phone_codec(self, codec: BridgeCodec) -> None:
        """The phone leg settled another of the phone's codecs (before the phone's media)."""
        if codec is not self._path.phone_codec:
            self._set_decoder(codec)
            self._path = MediaPath(codec, self._path.webrtc_codec)

    def set_webrtc_codec(self, codec: BridgeCodec) -> None:
        """The WebRTC leg's negotiated codec is known: passthrough from now on if it matches."""
        self._path = MediaPath(self._path.phone_codec, codec)

    async def recv(self) -> av.Packet[Any] | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        clock = self._clock
        if clock is None:
            clock = self._clock = MediaClock.of(asyncio.get_running_loop())
        if self._muted:  # a direct sender took the stream: aiortc's loop waits for ever
            await asyncio.get_running_loop().create_future()  # cancelled with the sender
        now = clock.time()
        if self._next_at is None:
            self._next_at = now
        if self._next_at > now:
            await clock.wait_until(self._next_at)
            now = clock.time()
        payload, pts = self.take(now)
        if self._path.passthrough:
            packet = av.Packet(payload)
            packet.pts = pts
            packet.time_base = self._time_base
            return packet
        return self._decode(payload, pts)

    def mute(self) -> None:
        """Another sender pulls the frames (:meth:`take`); ``recv`` yields none from now on."""
        self._muted = True

    def due(self, now: float, slack: float = TICK / 2) -> bool:
        """Whether the next 20 ms frame's time has come (``slack`` early at most)."""
        return self._next_at is None or self._next_at <= now + slack

    def take(self, now: float) -> tuple[bytes, int]:
        """The next frame in the phone's codec and its timestamp: a jitter-buffer slot or silence.

        Silence is G.711 silence bytes for G.711, else an empty payload that
        :meth:`_decode` turns into 20 ms of zeros.
        """
        if self._next_at is None:
            self._next_at = now
        slot = self._receiver.pop(now)
        codec = self._path.phone_codec
        payload: bytes
        if isinstance(slot, Audio) and slot.payload:
            payload = slot.payload
            if codec in G711_SILENCE:
                self._samples = len(payload)  # G.711/G.722: one byte per 1/8000 s
        else:
            assert slot is None or isinstance(slot, Loss) or not slot.payload
            silence = G711_SILENCE.get(codec)
            if silence is not None:
                payload = bytes([silence]) * self._samples
            else:
                payload = _OPUS_SILENCE if codec is BridgeCodec.OPUS else b""
            self._silence += 1
        # G.711 and G.722 carry one byte per 1/8000 s; opus is sent in 20 ms frames.
        seconds = len(payload) / _PHONE_RATE if codec is not BridgeCodec.OPUS else _FRAME_SECONDS
        if not payload:
            seconds = _FRAME_SECONDS
        pts = self._pts
        self._pts += round(seconds * self._rate)
        self._next_at += seconds
        if now - self._next_at > _STALL:
            self._next_at = now  # the loop stalled: do not burst to catch up
        if self._path.passthrough:
            self._passthrough += 1
        else:
            self._transcoded += 1
        return payload, pts

    def _decode(self, payload: bytes, pts: int) -> av.AudioFrame:
        """One decoded s16 mono frame; silence for an empty or undecodable payload.

        A phone's bad opus or G.722 bytes must not end the track: FFmpeg's
        error becomes 20 ms of silence.
        """
        frame: av.AudioFrame | None = None
        if payload:
            packet = av.Packet(payload)
            packet.pts = pts
            packet.time_base = self._time_base
            try:
                frames = self._decoder.decode(packet)
            except (av.FFmpegError, ValueError):
                frames = []
            if frames and isinstance(frames[0], av.AudioFrame):
                frame = frames[0]
                if frame.format.name != "s16" or frame.layout.name != "mono":
                    frame.pts = None
                    converted = self._to_s16.resample(frame)
                    frame = converted[0] if converted else None
        if frame is None:
            samples = len(payload) if self._path.phone_codec.is_g711 and payload else 0
            samples = samples or round(_FRAME_SECONDS * self._rate)
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, samples), dtype=np.int16), format="s16", layout="mono"
            )
        frame.sample_rate = self._rate
        frame.pts = pts
        frame.time_base = self._time_base
        return frame


class _RtpTap:
    """Takes the peer's RTP of the phone's codec at aiortc's receiver, before its jitter buffer.

    aiortc has no public hook for encoded audio: its DTLS transport awaits
    ``receiver._handle_rtp_packet(packet, arrival_time_ms=...)`` for every
    packet, so the tap shadows that method on the one receiver instance.
    Packets of other payload types, and G.711/G.722 packets that are not
    20 ms, 160 bytes (a peer with another ptime: the phone leg sends one 20 ms packet
    per slot), go on to aiortc's own handler, which decodes them; the leg
    re-encodes 20 ms frames.
    """

    def __init__(self, receiver: Any, audio: PhoneCallAudio, heard: Callable[[], bool]) -> None:
        self._receiver = receiver
        self._audio = audio
        self._heard = heard
        self._original = receiver._handle_rtp_packet
        receiver._handle_rtp_packet = self._handle

    async def _handle(self, packet: Any, arrival_time_ms: int = 0) -> None:
        audio = self._audio
        if packet.payload_type == audio.tapped_type and (
            len(packet.payload) == _DEFAULT_SAMPLES or audio.tapped_opus
        ):
            if self._heard():
                audio.peer_passthrough += 1
                audio.leg.from_peer(packet.payload)
            return
        await self._original(packet, arrival_time_ms=arrival_time_ms)

    def remove(self) -> None:
        vars(self._receiver).pop("_handle_rtp_packet", None)


class PhoneCallAudio:
    """A bridged call's audio for the calls service: ``CallMedia(audio=PhoneCallAudio(leg))``.

    Implements :class:`~p2pnode.sessions.media.CallAudio`. Each connection of
    the call sends a fresh :class:`PhoneAudioTrack` over the leg's jitter
    buffer; what the peer sends is tapped as RTP when the connection
    negotiated the phone's codec (no decode, no encode, no queue), decoded and
    re-encoded otherwise. The leg and its socket outlive the connections
    (relay failover), like a calls service's source and recorder.
    """

    def __init__(self, leg: PhoneRtpLeg) -> None:
        self.leg = leg
        self._codec: BridgeCodec | None = None
        self._track: PhoneAudioTrack | None = None
        self._to_peer = (0, 0, 0)  # counts of the tracks of earlier connections
        self.peer_passthrough = 0
        self.peer_transcoded = 0
        self.tapped_type: int | None = None  # the WebRTC payload type taken as is
        self.tapped_opus = False  # opus on both legs: any packet size is taken
        self._transceiver: object | None = None  # the latest connection's
        self.direct: DirectRtp | None = None  # the latest connection's direct sender
        self._direct_done = 0  # frames sent by the direct senders of earlier connections

    @property
    def codec(self) -> BridgeCodec | None:
        """The WebRTC leg's negotiated codec (None before the answer)."""
        return self._codec

    def track(self) -> PhoneAudioTrack:
        """A new connection's sending track (transcoding until :meth:`negotiated`).

        The previous connection's direct sender retires: both would pull the
        same jitter buffer and split the phone's frames between them.
        """
        if self.direct is not None:
            self.direct.retire()
        if self._track is not None:
            old = self._track.statistics()
            passthrough, transcoded, silence = self._to_peer
            self._to_peer = (
                passthrough + old.passthrough_frames,
                transcoded + old.transcoded_frames,
                silence + old.silence_frames,
            )
        path = choose_media_path(self.leg.codec, self._codec or BridgeCodec.OPUS)
        self._track = PhoneAudioTrack(self.leg.receiver, path)
        return self._track

    def negotiated(self, codec: str | None) -> None:
        """The connection's codec ("audio/PCMU"...): passthrough both ways if it is the phone's."""
        found = BridgeCodec.from_name((codec or "").removeprefix("audio/"))
        if found is None:
            return
        self._codec = found
        if self._track is not None:
            self._track.set_webrtc_codec(found)
        self.tapped_type = _STATIC_TYPE.get(found) if found is self.leg.codec else None
        self.tapped_opus = False
        self._tap_opus()
        self._hook_direct()

    def phone_codec_changed(self) -> None:
        """The leg settled another of the phone's codecs: the track decodes it, and when the
        connection negotiated that codec, the tap and the direct sender take over."""
        if self._track is not None:
            self._track.set_phone_codec(self.leg.codec)
        if self._codec is not None:
            self.negotiated(f"audio/{self._codec.value}")

    def _tap_opus(self) -> None:
        """Opus on both legs: tap the connection's opus payload type (dynamic, from its SDP).

        The connection's codec and its transceiver arrive in either order
        (an answering connection's track comes before its answer is made).
        """
        both = self._codec is BridgeCodec.OPUS and self.leg.codec is BridgeCodec.OPUS
        if both and self._transceiver is not None:
            self.tapped_type = _dynamic_type(self._transceiver, "audio/opus")
            self.tapped_opus = self.tapped_type is not None

    async def receive(
        self, track: MediaStreamTrack, transceiver: object, heard: Callable[[], bool]
    ) -> None:
        """The connection's audio both ways until the leg closes or the track ends.

        Passthrough (the connection negotiated the phone's codec): the peer's RTP
        is tapped at the receiver and the phone's frames go out through a
        :class:`DirectRtp` on the media clock; otherwise aiortc decodes and
        encodes.
        """
        receiver = getattr(transceiver, "receiver", None)
        self._transceiver = transceiver
        self._tap_opus()
        tap = _RtpTap(receiver, self, heard) if hasattr(receiver, "_handle_rtp_packet") else None
        self._hook_direct()
        try:
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(self._decoded(track, heard))
                await self.leg.wait_closed()
                pump.cancel()
        finally:
            if tap is not None:
                tap.remove()
            direct = self.direct
            if direct is not None and direct.sender is getattr(transceiver, "sender", None):
                direct.retire()
                MediaClock.of(asyncio.get_running_loop()).discard(direct)

    def _hook_direct(self) -> None:
        """Passthrough: the phone's frames go out by :class:`DirectRtp` from now on.

        Needs the connection's codec (:meth:`negotiated`), its transceiver
        (:meth:`receive`) and our track on its sender; they arrive in an order
        that depends on who made the offer (an answering connection hears its
        track before its answer names the codec and before our track is
        added), so each of those steps tries, and the last one hooks.
        """
        sender = getattr(self._transceiver, "sender", None)
        mine = self._track
        if mine is None:
            return
        if (
            self.tapped_type is None
            or not hasattr(sender, "_ssrc")
            or getattr(sender, "track", None) is not self._track
            or (self.direct is not None and self.direct.sender is sender)
        ):
            return
        mine.mute()
        divisor = _PTS_DIVISOR.get(self.leg.codec, 1)
        if self.direct is not None:  # an earlier connection's, retired by track()
            self._direct_done += self.direct.sent
        self.direct = DirectRtp(mine, sender, self.tapped_type, divisor)
        MediaClock.of(asyncio.get_running_loop()).add(self.direct)

    async def _decoded(self, track: MediaStreamTrack, heard: Callable[[], bool]) -> None:
        """Frames aiortc decoded (a codec other than the phone's): re-encode them."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.AudioFrame) and heard():
                for payload in self.leg.encode(frame):
                    self.peer_transcoded += 1
                    self.leg.from_peer(payload)

    def statistics(self) -> TrackStatistics:
        passthrough, transcoded, silence = self._to_peer
        if self._track is not None:
            now = self._track.statistics()
            passthrough += now.passthrough_frames
            transcoded += now.transcoded_frames
            silence += now.silence_frames
        direct = self._direct_done + (0 if self.direct is None else self.direct.sent)
        return TrackStatistics(
            passthrough, transcoded, silence, self.peer_passthrough, self.peer_transcoded, direct
        )


def _dynamic_type(transceiver: object, mime_type: str) -> int | None:
    """The payload type the connection negotiated for ``mime_type`` (aiortc's ``_codecs``)."""
    for codec in getattr(transceiver, "_codecs", ()):
        if str(getattr(codec, "mimeType", "")).lower() == mime_type:
            payload_type = getattr(codec, "payloadType", None)
            return payload_type if isinstance(payload_type, int) else None
    return None

"""The bridge's P2P side: a calls service whose microphone is the phone and whose ear is teed.

Why a subclass of :class:`~p2pnode.sessions.calls.CallService` and not a hook
in it: the calls service builds its own microphone track from an
``AudioSource``; a bridged call must instead send the phone's
:class:`~p2pnode.gateways.sip.bridge_tracks.PhoneAudioTrack` (so G.711 reaches
aiortc untouched as ``av.Packet`` when the negotiated codec matches the
phone's) and hand what the peer says to the phone leg. The subclass overrides
the private ``_make_offer``/``_make_answer``/``_accept_answer``/``_receive``
steps; a public ``CallMedia(track=...)`` option would be sturdier (left to the
calls service's owner, see docs/sip-bridge.md).

Bounds: the peer -> phone queue holds ``BRIDGE_QUEUE_FRAMES`` frames and drops
the oldest (latency beats completeness); ``sinks`` and ``tracks`` hold one
entry per call in progress and the controller removes them at the call's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from p2pnode.gateways.sip.bridge_media import BridgeCodec
from p2pnode.gateways.sip.bridge_tracks import PhoneAudioTrack
from p2pnode.sessions.calls import CallService

__all__ = ["BRIDGE_QUEUE_FRAMES", "BridgedCallService", "FrameQueueTrack"]

BRIDGE_QUEUE_FRAMES = 25  # peer -> phone frames held between the tee and the RTP leg


class FrameQueueTrack(MediaStreamTrack):
    """Frames teed from the calls service, handed to the phone leg's pump (bounded)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue(BRIDGE_QUEUE_FRAMES)

    def offer(self, frame: av.AudioFrame | None) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # drop the oldest: latency beats completeness
        self.queue.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        frame = await self.queue.get()
        if frame is None:
            raise MediaStreamError
        return frame


class _TeeTrack(MediaStreamTrack):
    """What aiortc received, also handed to the call's sink (the phone leg's queue)."""

    kind = "audio"

    def __init__(self, inner: MediaStreamTrack, sink: Callable[[av.AudioFrame], None]) -> None:
        super().__init__()
        self._inner = inner
        self._sink = sink

    async def recv(self) -> av.AudioFrame:
        frame = await self._inner.recv()
        assert isinstance(frame, av.AudioFrame)
        self._sink(frame)
        return frame


class BridgedCallService(CallService):
    """A calls service whose audio comes from the phone's track and goes to a per-call sink.

    The calls service builds its own microphone track from an ``AudioSource``;
    for a bridged call the sender's track is swapped for the
    :class:`PhoneAudioTrack` once the connection's description is made, so
    G.711 can reach aiortc untouched (``av.Packet``) when the negotiated codec
    matches the phone's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sinks: dict[bytes, Callable[[av.AudioFrame], None]] = {}
        self.tracks: dict[bytes, PhoneAudioTrack] = {}
        self.codecs: dict[bytes, BridgeCodec] = {}  # the WebRTC leg's codec, per bridged call
        self.next_track: PhoneAudioTrack | None = None  # for the dial() in progress

    def _phone_track(self, session: Any) -> PhoneAudioTrack | None:
        call_id: bytes = session.call_id
        track = self.tracks.get(call_id)
        if track is None and self.next_track is not None:
            track, self.next_track = self.next_track, None
            self.tracks[call_id] = track
        return track

    @staticmethod
    def _swap(leg: Any, track: PhoneAudioTrack) -> None:
        for transceiver in leg.pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.sender.replaceTrack(track)

    def _tell_codec(self, session: Any, track: PhoneAudioTrack) -> None:
        name = str(getattr(session, "codec", None) or "").removeprefix("audio/")
        codec = BridgeCodec.from_name(name)
        if codec is not None:
            track.set_webrtc_codec(codec)
            if session.call_id in self.tracks:  # removed with the track at the call's end
                self.codecs[session.call_id] = codec

    def forget(self, call_id: bytes) -> PhoneAudioTrack | None:
        """The call ended: drop what was kept for it; its phone track, if any."""
        self.sinks.pop(call_id, None)
        self.codecs.pop(call_id, None)
        return self.tracks.pop(call_id, None)

    async def _make_offer(self, session: Any, leg: Any) -> str:
        track = self._phone_track(session)
        sdp = await super()._make_offer(session, leg)
        if track is not None:
            self._swap(leg, track)
        return sdp

    async def _make_answer(self, session: Any, leg: Any) -> str:
        track = self._phone_track(session)
        sdp = await super()._make_answer(session, leg)
        if track is not None:
            self._swap(leg, track)
            self._tell_codec(session, track)
        return sdp

    async def _accept_answer(self, session: Any, leg: Any) -> None:
        await super()._accept_answer(session, leg)
        track = self.tracks.get(session.call_id)
        if track is not None:
            self._tell_codec(session, track)

    async def _receive(self, session: object, leg: object, track: MediaStreamTrack) -> None:
        call_id = getattr(session, "call_id", b"")

        def sink(frame: av.AudioFrame) -> None:
            target = self.sinks.get(call_id)
            if target is not None:
                target(frame)

        tee = _TeeTrack(track, sink) if track.kind == "audio" else track
        await super()._receive(session, leg, tee)  # type: ignore[arg-type]

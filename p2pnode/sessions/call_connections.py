"""The aiortc side of calls: one ``RTCPeerConnection`` per media generation.

Why apart from ``calls.py``: the service drives signals and the call machine;
this module only makes, describes, listens to and closes connections. Every
connection names its own STUN/TURN servers (the ``MediaPath`` of its
generation, never aiortc's default public STUN) and may be relay-only.

Warm connections: with ``CallConfig.warm`` one "offer" and one "answer"
connection are gathered ahead of need (TURN allocation, STUN), trusted for
``WARM_MAX_AGE`` seconds (NAT bindings age), and replaced as they are taken.

Sources and the recorder outlive the connections (they hang off the session),
so a tone keeps its phase and a recording its timeline across failovers.
Closing is bounded and owned by the service's task group: a signal handler
never waits for aioice to give up on a dead relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import SessionDescription

from p2pnode.connectivity import ice_tuning
from p2pnode.sessions.call_config import CallConfig, answer_codec_order
from p2pnode.sessions.call_legs import CallSession, MediaLeg, first_codec
from p2pnode.sessions.call_sdp import path_for
from p2pnode.sessions.media import SourceTrack, TestPatternTrack, WavRecorder

__all__ = ["CLOSE_LIMIT", "WARM_MAX_AGE", "AiortcLegs"]

logger = logging.getLogger("p2pnode.sessions.calls")

CLOSE_LIMIT = 2.0  # seconds a discarded connection may take to close
WARM_MAX_AGE = 60.0  # seconds a pre-gathered connection is trusted (NAT bindings age)

Report = Callable[[CallSession, str], None]


class AiortcLegs:
    """Makes the calls' aiortc connections; the service owns the task group it runs in.

    ``config`` is read at each new connection (the runtime swaps the service's
    paths when a relay is found); ``report`` tells the service of a call's first
    audio frame.
    """

    def __init__(self, config: Callable[[], CallConfig], report: Report) -> None:
        self._config = config
        self._report = report
        self._tasks: asyncio.TaskGroup | None = None
        self._warm: dict[str, MediaLeg] = {}  # "offer" / "answer": gathered ahead of need
        self._stopped = False

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks
        if self._config().warm:
            for role in ("offer", "answer"):
                tasks.create_task(self._warm_up(role))

    def stop(self) -> None:
        """No more warm connections; the waiting ones are closed."""
        self._stopped = True
        for leg in self._warm.values():
            self.close(leg)
        self._warm.clear()

    def warm_ready(self, role: str) -> bool:
        return role in self._warm

    # ------------------------------------------------------------ making

    def new_leg(self, session: CallSession | None, generation: int) -> MediaLeg:
        """A fresh connection on the path of ``generation`` (paths rotate on failover)."""
        path = path_for(self._config(), generation)
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[
                    RTCIceServer(urls=s.url, username=s.username, credential=s.credential)
                    for s in path.servers
                ],
                iceTransportPolicy=(
                    RTCIceTransportPolicy.RELAY if path.relay_only else RTCIceTransportPolicy.ALL
                ),
            )
        )
        leg = MediaLeg(generation, path, pc)
        leg.session = session

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            assert self._tasks is not None and leg.session is not None
            leg.receivers.append(self._tasks.create_task(self._receive(leg.session, leg, track)))

        return leg

    def reuse_offer(self, session: CallSession, warm: MediaLeg) -> str:
        """A warm offer connection takes the call's audio; its gathered offer is the dial's."""
        _pc(warm).getTransceivers()[0].sender.replaceTrack(audio_track(session))
        assert warm.offer_sdp is not None
        return warm.offer_sdp

    async def _warm_up(self, role: str) -> None:
        """Gather one connection on the first path ahead of need (TURN allocation, STUN).

        An offer leg has its offer ready; an answer leg has its audio transceiver
        and candidates, and aiortc reuses both for the next offer it is given.
        """
        leg = self.new_leg(None, 0)
        pc = _pc(leg)
        transceiver = pc.addTransceiver("audio", direction="sendrecv")
        self._tune(leg)
        try:
            if role == "offer":
                self._prefer_codecs(transceiver)
                await pc.setLocalDescription(await pc.createOffer())
                leg.offer_sdp = pc.localDescription.sdp
            else:
                await transceiver.sender.transport.transport.iceGatherer.gather()
        except Exception as error:  # a dead relay must not take the service down
            logger.info("warm %s connection failed: %s", role, error.__class__.__name__)
            self.close(leg)
            return
        if role in self._warm or self._stopped:
            self.close(leg)
            return
        self._warm[role] = leg

    def take_warm(self, role: str, session: CallSession) -> MediaLeg | None:
        if role == "offer" and session.media.audio_codecs:
            return None  # the warm offer lists the service's codecs, not this call's
        leg = self._warm.pop(role, None)
        if leg is None or time.monotonic() - leg.started > WARM_MAX_AGE:
            if leg is not None:
                self.close(leg)
            leg = None
        assert self._tasks is not None
        if self._config().warm:
            self._tasks.create_task(self._warm_up(role))
        if leg is not None:
            leg.session = session
            leg.started = time.monotonic()
        return leg

    def _prefer_codecs(self, transceiver: Any, names: tuple[str, ...] = ()) -> None:
        capabilities = RTCRtpSender.getCapabilities("audio").codecs
        preferred = [
            codec
            for name in names or self._config().audio_codecs
            for codec in capabilities
            if codec.mimeType.lower() == f"audio/{name.lower()}"
        ]
        if preferred:
            transceiver.setCodecPreferences(preferred)

    def _prefer_answer(self, pc: RTCPeerConnection, codecs: tuple[str, ...], offer: str) -> None:
        """Before the offer is set: the answer will name ``codecs`` the offer has (else its own)."""
        order = answer_codec_order(codecs, _offered(offer))
        if order:
            idle = [t for t in pc.getTransceivers() if t.kind == "audio" and t.mid is None]
            # aiortc answers on the first idle audio transceiver (a warm one, or this one)
            self._prefer_codecs(idle[0] if idle else pc.addTransceiver("audio"), order)

    def _tune(self, leg: MediaLeg) -> None:
        """Register the leg's ICE agents with ice_tuning (fast check retransmission)."""
        if not self._config().tune_ice:
            return
        for transceiver in _pc(leg).getTransceivers():
            transport = getattr(transceiver.sender.transport, "transport", None)
            gatherer = getattr(transport, "iceGatherer", None)
            connection = getattr(gatherer, "_connection", None)  # aiortc has no accessor
            if connection is not None:
                ice_tuning.hold_relayed_checks(connection, 0.0)

    # ------------------------------------------------------------ describing

    async def offer(self, session: CallSession, leg: MediaLeg) -> str:
        pc = _pc(leg)
        transceiver = pc.addTransceiver("audio", direction="sendrecv")
        self._prefer_codecs(transceiver, session.media.audio_codecs)
        transceiver.sender.replaceTrack(audio_track(session))
        if session.media.video:
            pc.addTransceiver(TestPatternTrack(), direction="sendrecv")
        self._tune(leg)
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        return sdp

    async def answer(self, session: CallSession, leg: MediaLeg) -> str:
        assert session.remote_sdp is not None
        pc = _pc(leg)
        if session.media.audio_codecs:  # this call's codecs first (CallMedia.audio_codecs)
            self._prefer_answer(pc, session.media.audio_codecs, session.remote_sdp)
        await pc.setRemoteDescription(RTCSessionDescription(session.remote_sdp, "offer"))
        self._tune(leg)
        pc.addTrack(audio_track(session))
        if session.media.video and any(t.kind == "video" for t in pc.getTransceivers()):
            pc.addTrack(TestPatternTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        sdp: str = pc.localDescription.sdp
        session.codec = first_codec(sdp)
        negotiated(session)
        leg.answered = True
        return sdp

    async def accept(self, session: CallSession, leg: MediaLeg) -> None:
        """The peer's answer (to the dial's offer or a re-offer) arrived for ``leg``."""
        assert session.remote_sdp is not None
        await _pc(leg).setRemoteDescription(RTCSessionDescription(session.remote_sdp, "answer"))
        session.codec = first_codec(session.remote_sdp)
        negotiated(session)
        leg.answered = True
        leg.started = time.monotonic()

    async def reanswered(self, session: CallSession, pending: MediaLeg) -> None:
        """The peer answered our re-offer: ``pending`` gets it (the codec stays the call's)."""
        assert session.remote_sdp is not None
        await _pc(pending).setRemoteDescription(RTCSessionDescription(session.remote_sdp, "answer"))
        negotiated(session)
        pending.answered = True
        pending.started = time.monotonic()

    # ------------------------------------------------------------ hearing

    async def _receive(self, session: CallSession, leg: MediaLeg, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            await session.video.consume(track)
            return
        audio = session.media.audio
        if audio is not None:  # the binding takes the audio (CallMedia.audio)
            transceivers = _pc(leg).getTransceivers()
            transceiver = next((t for t in transceivers if t.kind == "audio"), None)
            await audio.receive(track, transceiver, lambda: self._heard(session, leg, None))
            return
        while not session.call.ended:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._heard(session, leg, frame)

    def _heard(self, session: CallSession, leg: MediaLeg, frame: object) -> bool:
        """One frame (or packet) of audio arrived on ``leg``; False if ``leg`` is superseded."""
        if session.leg is not leg or session.call.ended:
            return False  # a superseded connection still draining
        now = time.monotonic()
        session.frames += 1
        if session.first_frame_at is None:
            session.first_frame_at = now
            session.heard.set()
            self._report(session, "first audio frame")
        session.last_frame_at = now
        leg.last_frame_at = now
        if session.recorder is None and session.media.record_to is not None:
            session.recorder = WavRecorder(session.media.record_to)
        if session.recorder is not None and isinstance(frame, av.AudioFrame):
            session.recorder.write_frame(frame, now)
        return True

    # ------------------------------------------------------------ closing

    def close(self, leg: MediaLeg) -> None:
        """Close a connection in a task the service owns: a signal handler never waits on it.

        A leg without a connection (an ``SdpSource`` call's) is only marked closed.
        """
        if leg.closing:
            return
        leg.closing = True
        for receiver in leg.receivers:  # a track that never got media would wait forever
            receiver.cancel()
        if leg.pc is not None:
            assert self._tasks is not None
            self._tasks.create_task(_bounded_close(leg.pc))


def _pc(leg: MediaLeg) -> RTCPeerConnection:
    assert leg.pc is not None  # every leg this module made has one
    return leg.pc


def audio_track(session: CallSession) -> MediaStreamTrack:
    """What a new connection sends: the ``CallMedia.audio`` binding's track, else the source."""
    audio = session.media.audio
    return audio.track() if audio is not None else SourceTrack(session.media.source)


def _offered(sdp: str) -> tuple[str, ...]:
    """The offer's audio codec names in its order (a peer's input: bad SDP gives none)."""
    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError, AssertionError):  # aiortc asserts on bad m= lines
        return ()
    audio = next((m for m in description.media if m.kind == "audio"), None)
    return () if audio is None else tuple(c.mimeType.split("/")[-1] for c in audio.rtp.codecs)


def negotiated(session: CallSession) -> None:
    if session.media.audio is not None:
        session.media.audio.negotiated(session.codec)


async def _bounded_close(pc: RTCPeerConnection) -> None:
    # aioice deletes a TURN allocation on close and retransmits for ~40 s when the
    # relay is dead (the failover case): the connection is discarded anyway.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pc.close(), CLOSE_LIMIT)

"""The call service: places and answers calls over aiortc, signalling through an injected sender.

This is the asyncio adapter around the sans-IO ``Call`` machine: it decodes
signals, applies policy (contacts ring; non-contacts ring, wait in requests or
are refused; auto-answer for unattended nodes), resolves glare, performs the
machine's actions (SDP offer/answer through one ``RTCPeerConnection`` per
media generation) and reports ``CallUpdate`` events.

Media paths are explicit: every ``MediaPath`` names its STUN/TURN servers
(never aiortc's default public STUN) and whether only relayed candidates may
be used. Relay failover: the receive side watches frame arrival; when a live
call hears nothing for ``silence_after`` seconds (about one second, not ICE's
30 s consent timeout) the caller re-offers on the next path with a fresh
connection; the callee answers on its own next path; the old connection is
closed once the new one is answered. Sources and the recorder outlive the
connections, so the tone keeps its phase and the recording its timeline.

Bounds: at most ``max_calls`` live calls (more get BUSY), one pending re-offer
per call, signals larger than the codec's limit are refused by the decoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
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

from p2pnode.connectivity import ice_tuning
from p2pnode.sessions.call import (
    Call,
    CallAction,
    CallDirection,
    CallEvent,
    CallState,
    CallStateError,
    Transition,
    glare_winner,
)
from p2pnode.sessions.call_config import (
    CallConfig,
    CallMedia,
    CallStatistics,
    CallUpdate,
    IceServer,
    MediaPath,
    NonContactPolicy,
)
from p2pnode.sessions.call_legs import (
    DECLINE_EVENTS as _DECLINE_EVENTS,
)
from p2pnode.sessions.call_legs import (
    DECLINE_REASONS as _DECLINE_REASONS,
)
from p2pnode.sessions.call_legs import (
    REMOTE_EVENTS as _REMOTE_EVENTS,
)
from p2pnode.sessions.call_legs import (
    SEND_KINDS as _SEND_KINDS,
)
from p2pnode.sessions.call_legs import (
    CallSession as _Session,
)
from p2pnode.sessions.call_legs import (
    MediaLeg as _Leg,
)
from p2pnode.sessions.call_legs import (
    SignalDrops as _Drops,
)
from p2pnode.sessions.call_legs import (
    first_codec as _first_codec,
)
from p2pnode.sessions.call_legs import (
    path_kind as _path_kind,
)
from p2pnode.sessions.call_signal import (
    CallSignal,
    CallSignalDecodeError,
    DeclineReason,
    Dtmf,
    RelayedCaller,
    SignalKind,
    decode_signal,
    encode_signal,
)
from p2pnode.sessions.media import (
    SourceTrack,
    TestPatternTrack,
    WavRecorder,
)

__all__ = [
    "CallConfig",
    "CallMedia",
    "CallService",
    "CallStatistics",
    "CallUpdate",
    "IceServer",
    "MediaPath",
    "NonContactPolicy",
    "SignalSender",
]

logger = logging.getLogger(__name__)

TICK = 0.05  # seconds between deadline and silence checks
_LOG_INTERVAL = 60.0
CLOSE_LIMIT = 2.0  # seconds a discarded connection may take to close
WARM_MAX_AGE = 60.0  # seconds a pre-gathered connection is trusted (NAT bindings age)

SignalSender = Callable[[str, bytes], Awaitable[None]]


class CallService:
    """Calls for one local peer. Use as ``async with CallService(...) as calls:``."""

    def __init__(
        self,
        local_peer: str,
        config: CallConfig,
        send: SignalSender,
        *,
        is_contact: Callable[[str], bool] = lambda _peer: True,
        answer_media: Callable[[], CallMedia] = CallMedia,
    ) -> None:
        if not config.paths:
            raise ValueError("a call service needs at least one media path")
        self.local_peer = local_peer
        self.config = config
        self._send = send
        self._is_contact = is_contact
        self._answer_media = answer_media
        if config.tune_ice:
            ice_tuning.install()
        self._sessions: dict[bytes, _Session] = {}
        self._updates: asyncio.Queue[CallUpdate] = asyncio.Queue()
        self._tasks: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._warm: dict[str, _Leg] = {}  # "offer" / "answer": gathered ahead of need
        self.drops = _Drops()

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> CallService:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._tasks.create_task(self._ticker())
        if self.config.warm:
            for role in ("offer", "answer"):
                self._tasks.create_task(self._warm_up(role))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for session in list(self._sessions.values()):
            if not session.call.ended:
                with contextlib.suppress(CallStateError):
                    await self._apply(session, CallEvent.LOCAL_HANGUP)
            await self._close_media(session)
        self._stop.set()
        for leg in self._warm.values():
            self._close_leg(leg)
        self._warm.clear()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)

    # ------------------------------------------------------------- user API

    async def dial(self, peer: str, media: CallMedia | None = None) -> bytes:
        """Place a call; returns its id. Progress arrives as ``CallUpdate``s."""
        session = _Session(
            os.urandom(16),
            peer,
            Call(CallDirection.OUTGOING, self.config.timers),
            media or CallMedia(),
        )
        self._sessions[session.call_id] = session
        warm = None if session.media.video else self._take_warm("offer", session)
        if warm is not None and warm.offer_sdp is not None:
            session.leg = warm
            warm.pc.getTransceivers()[0].sender.replaceTrack(self._audio_track(session))
            session.local_sdp = warm.offer_sdp
        else:
            session.leg = await self._new_leg(session, 0)
            session.local_sdp = await self._make_offer(session, session.leg)
        await self._apply(session, CallEvent.LOCAL_DIAL)
        return session.call_id

    async def answer(self, call_id: bytes, media: CallMedia | None = None) -> None:
        session = self._session(call_id)
        if media is not None:
            session.media = media
        await self._apply(session, CallEvent.LOCAL_ANSWER)

    async def decline(self, call_id: bytes) -> None:
        await self._apply(self._session(call_id), CallEvent.LOCAL_DECLINE)

    async def hangup(self, call_id: bytes) -> None:
        await self._apply(self._session(call_id), CallEvent.LOCAL_HANGUP)

    async def send_dtmf(self, call_id: bytes, digit: str, duration_ms: int = 100) -> None:
        """Tell the peer one digit was keyed (e.g. a bridged phone's RFC 4733 event).

        Raises ``KeyError`` for an unknown call, ``ValueError`` for a call not
        answered (yet or any more) or a digit outside 0-9 * # A-D.
        """
        session = self._session(call_id)
        if session.call.state is not CallState.ANSWERED:
            raise ValueError("dtmf outside an answered call")
        dtmf = Dtmf(session.dtmf_sent, digit, duration_ms)
        session.dtmf_sent += 1
        signal = CallSignal(SignalKind.DTMF, call_id, session.generation, dtmf=dtmf)
        await self._send(session.peer, encode_signal(signal))

    async def send_caller(self, call_id: bytes, caller: RelayedCaller) -> None:
        """As a gateway: tell the callee who placed ``call_id`` on our side (after dial)."""
        session = self._session(call_id)
        signal = CallSignal(SignalKind.CALLER, call_id, session.generation, caller=caller)
        await self._send(session.peer, encode_signal(signal))

    async def wait_update(self) -> CallUpdate:
        return await self._updates.get()

    async def wait_state(self, call_id: bytes | None, states: set[CallState]) -> CallUpdate:
        """The next update (of ``call_id``, or any call when None) reaching one of ``states``.

        Updates of other calls or states are consumed; wrap in ``asyncio.timeout``.
        """
        while True:
            update = await self._updates.get()
            if (call_id is None or update.call_id == call_id) and update.state in states:
                return update

    async def wait_first_frame(self, call_id: bytes) -> float:
        """When (``time.monotonic()``) the first audio frame of ``call_id`` arrived."""
        session = self._session(call_id)
        await session.heard.wait()
        assert session.first_frame_at is not None
        return session.first_frame_at

    def warm_ready(self, role: str) -> bool:
        """Whether a pre-gathered "offer" or "answer" connection is waiting."""
        return role in self._warm

    def path(self, call_id: bytes) -> str | None:
        """How the call's media flows now, e.g. 'relay (relay->relay) via relay1'."""
        return _path_kind(self._session(call_id).leg)

    def state(self, call_id: bytes) -> CallState:
        return self._session(call_id).call.state

    def statistics(self, call_id: bytes) -> CallStatistics:
        session = self._session(call_id)
        return CallStatistics(
            frames=session.frames,
            first_frame_at=session.first_frame_at,
            last_frame_at=session.last_frame_at,
            generation=session.leg.generation if session.leg else 0,
            failovers=session.failovers,
            codec=session.codec,
            video_frames=session.video.frames,
        )

    def video_snapshot(self, call_id: bytes) -> object:
        return self._session(call_id).video.snapshot()

    # ------------------------------------------------------------ signalling

    async def handle_signal(self, peer: str, payload: bytes) -> None:
        """Feed one signal from an authenticated ``peer``; bad input is dropped and counted."""
        try:
            signal = decode_signal(payload)
        except CallSignalDecodeError as error:
            self.drops.drop(f"undecodable: {error}")
            return
        if signal.kind is SignalKind.INVITE:
            await self._on_invite(peer, signal)
            return
        session = self._sessions.get(signal.call_id)
        if session is None or session.peer != peer:
            self.drops.drop("unknown call")
            return
        if signal.dtmf is not None:
            self._on_dtmf(session, signal.dtmf)
            return
        if signal.caller is not None:
            self._on_caller(session, signal.caller)
            return
        event = _REMOTE_EVENTS.get(signal.kind)
        if signal.kind is SignalKind.DECLINE:
            event = _DECLINE_EVENTS[signal.reason or DeclineReason.DECLINED]
        if event is None:  # pragma: no cover - every non-invite kind is mapped
            self.drops.drop("unmapped kind")
            return
        if signal.sdp is not None:
            session.remote_sdp = signal.sdp
        if signal.kind is SignalKind.REANSWER and (
            session.pending is None or session.pending.generation != signal.generation
        ):
            self.drops.drop("stale reanswer")
            return
        if signal.kind is SignalKind.REOFFER:
            session.generation = signal.generation
        try:
            await self._apply(session, event)
        except CallStateError:
            self.drops.drop(f"{signal.kind.name.lower()} in state {session.call.state.value}")
            return
        if signal.kind is SignalKind.REANSWER:
            await self._on_reanswer(session)

    def _on_dtmf(self, session: _Session, dtmf: Dtmf) -> None:
        """Report each digit once, in the sender's order; repeats and late ones are dropped."""
        if session.call.state is not CallState.ANSWERED:
            self.drops.drop("dtmf outside an answered call")
            return
        if dtmf.sequence < session.dtmf_heard:
            self.drops.drop("stale dtmf")
            return
        session.dtmf_heard = dtmf.sequence + 1
        self._report(session, f"duration_ms={dtmf.duration_ms}", dtmf=dtmf.digit)

    def _on_caller(self, session: _Session, caller: RelayedCaller) -> None:
        """Once per incoming call, before it ends; later updates of the call repeat it."""
        if (
            session.call.direction is not CallDirection.INCOMING
            or session.call.ended
            or session.relayed_caller is not None
        ):
            self.drops.drop("unexpected caller")
            return
        session.relayed_caller = caller
        self._report(session, "verified by the gateway" if caller.verified else "unverified")

    async def _on_invite(self, peer: str, signal: CallSignal) -> None:
        if signal.call_id in self._sessions:
            self.drops.drop("duplicate invite")
            return
        session = _Session(
            signal.call_id,
            peer,
            Call(CallDirection.INCOMING, self.config.timers),
            self._answer_media(),
        )
        session.remote_sdp = signal.sdp
        live = [s for s in self._sessions.values() if not s.call.ended]
        self._sessions[signal.call_id] = session
        await self._apply(session, CallEvent.REMOTE_INVITE)
        dialling = [
            s
            for s in live
            if s.peer == peer and s.call.state in (CallState.DIALLING, CallState.RINGING_REMOTE)
        ]
        if dialling:  # glare: both peers dialled each other
            if glare_winner(self.local_peer, peer):
                await self._apply(session, CallEvent.GLARE_LOST)
                return
            for ours in dialling:
                session.media = ours.media
                await self._apply(ours, CallEvent.GLARE_LOST)
            await self._apply(session, CallEvent.LOCAL_ANSWER)  # we were calling them anyway
            return
        if len(live) >= self.config.max_calls:
            await self._apply(session, CallEvent.LOCAL_BUSY)
        elif self._is_contact(peer) or self.config.non_contacts is NonContactPolicy.RING:
            auto = self.config.auto_answer
            await self._apply(session, CallEvent.LOCAL_ANSWER if auto else CallEvent.LOCAL_RING)
        elif self.config.non_contacts is NonContactPolicy.REFUSE:
            await self._apply(session, CallEvent.LOCAL_REFUSE)
        else:  # requests wait for a human even on an auto-answering node
            await self._apply(session, CallEvent.LOCAL_QUEUE)

    # --------------------------------------------------------------- actions

    async def _apply(self, session: _Session, event: CallEvent) -> None:
        transition = session.call.handle(event, time.monotonic())
        await self._perform(session, transition)

    async def _perform(self, session: _Session, transition: Transition) -> None:
        for action in transition.actions:
            await self._action(session, action)
        if transition.new is not transition.old or transition.event is CallEvent.REMOTE_REANSWER:
            self._report(session)
        if session.call.ended:
            await self._close_media(session)

    async def _action(self, session: _Session, action: CallAction) -> None:
        kind = _SEND_KINDS.get(action)
        if action is CallAction.SEND_ANSWER:
            warm = self._take_warm("answer", session) if session.generation == 0 else None
            session.leg = warm or await self._new_leg(session, session.generation)
            sdp = await self._make_answer(session, session.leg)
            await self._signal(session, SignalKind.ANSWER, sdp=sdp)
        elif action is CallAction.SEND_REOFFER:
            session.generation += 1
            session.pending = await self._new_leg(session, session.generation)
            session.pending.started = time.monotonic()
            sdp = await self._make_offer(session, session.pending)
            await self._signal(session, SignalKind.REOFFER, sdp=sdp)
        elif action is CallAction.SEND_REANSWER:
            old = session.leg
            session.leg = await self._new_leg(session, session.generation)
            sdp = await self._make_answer(session, session.leg)
            await self._signal(session, SignalKind.REANSWER, sdp=sdp)
            if old is not None:
                self._close_leg(old)
        elif action is CallAction.SEND_INVITE:
            await self._signal(session, SignalKind.INVITE, sdp=session.local_sdp)
        elif action is CallAction.START_MEDIA:
            if session.call.direction is CallDirection.OUTGOING and session.leg is not None:
                await self._accept_answer(session, session.leg)
        elif action is CallAction.STOP_MEDIA:
            await self._close_media(session)
        elif kind is not None:
            reason = _DECLINE_REASONS.get(action)
            await self._signal(session, kind, reason=reason)

    async def _signal(
        self,
        session: _Session,
        kind: SignalKind,
        *,
        sdp: str | None = None,
        reason: DeclineReason | None = None,
    ) -> None:
        signal = CallSignal(kind, session.call_id, session.generation, sdp, reason)
        await self._send(session.peer, encode_signal(signal))

    def _report(self, session: _Session, detail: str = "", dtmf: str | None = None) -> None:
        path = session.leg.path.name if session.leg else None
        self._updates.put_nowait(
            CallUpdate(
                session.call_id,
                session.peer,
                session.call.direction,
                session.call.state,
                session.codec,
                _path_kind(session.leg) or path,
                detail,
                dtmf,
                None if session.relayed_caller is None else session.relayed_caller.uri,
            )
        )

    # ----------------------------------------------------------------- media

    async def _new_leg(self, session: _Session | None, generation: int) -> _Leg:
        path = self.config.paths[generation % len(self.config.paths)]
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
        leg = _Leg(generation, path, pc)
        leg.session = session

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            assert self._tasks is not None and leg.session is not None
            leg.receivers.append(self._tasks.create_task(self._receive(leg.session, leg, track)))

        return leg

    # ------------------------------------------------------------ warm legs

    async def _warm_up(self, role: str) -> None:
        """Gather one connection on the first path ahead of need (TURN allocation, STUN).

        An offer leg has its offer ready; an answer leg has its audio transceiver
        and candidates, and aiortc reuses both for the next offer it is given.
        """
        leg = await self._new_leg(None, 0)
        transceiver = leg.pc.addTransceiver("audio", direction="sendrecv")
        self._tune(leg)
        try:
            if role == "offer":
                self._prefer_codecs(transceiver)
                await leg.pc.setLocalDescription(await leg.pc.createOffer())
                leg.offer_sdp = leg.pc.localDescription.sdp
            else:
                await transceiver.sender.transport.transport.iceGatherer.gather()
        except Exception as error:  # a dead relay must not take the service down
            logger.info("warm %s connection failed: %s", role, error.__class__.__name__)
            self._close_leg(leg)
            return
        old = self._warm.get(role)
        if old is not None or self._stop.is_set():
            self._close_leg(leg)
            return
        self._warm[role] = leg

    def _take_warm(self, role: str, session: _Session) -> _Leg | None:
        leg = self._warm.pop(role, None)
        if leg is None or time.monotonic() - leg.started > WARM_MAX_AGE:
            if leg is not None:
                self._close_leg(leg)
            leg = None
        assert self._tasks is not None
        if self.config.warm:
            self._tasks.create_task(self._warm_up(role))
        if leg is not None:
            leg.session = session
            leg.started = time.monotonic()
        return leg

    def _prefer_codecs(self, transceiver: Any) -> None:
        capabilities = RTCRtpSender.getCapabilities("audio").codecs
        preferred = [
            codec
            for name in self.config.audio_codecs
            for codec in capabilities
            if codec.mimeType.lower() == f"audio/{name.lower()}"
        ]
        if preferred:
            transceiver.setCodecPreferences(preferred)

    async def _make_offer(self, session: _Session, leg: _Leg) -> str:
        transceiver = leg.pc.addTransceiver("audio", direction="sendrecv")
        self._prefer_codecs(transceiver)
        transceiver.sender.replaceTrack(self._audio_track(session))
        if session.media.video:
            leg.pc.addTransceiver(TestPatternTrack(), direction="sendrecv")
        self._tune(leg)
        await leg.pc.setLocalDescription(await leg.pc.createOffer())
        sdp: str = leg.pc.localDescription.sdp
        return sdp

    async def _make_answer(self, session: _Session, leg: _Leg) -> str:
        assert session.remote_sdp is not None
        await leg.pc.setRemoteDescription(RTCSessionDescription(session.remote_sdp, "offer"))
        self._tune(leg)
        leg.pc.addTrack(self._audio_track(session))
        if session.media.video and any(t.kind == "video" for t in leg.pc.getTransceivers()):
            leg.pc.addTrack(TestPatternTrack())
        await leg.pc.setLocalDescription(await leg.pc.createAnswer())
        sdp: str = leg.pc.localDescription.sdp
        session.codec = _first_codec(sdp)
        self._negotiated(session)
        leg.answered = True
        return sdp

    @staticmethod
    def _audio_track(session: _Session) -> MediaStreamTrack:
        """What a new connection sends: the ``CallMedia.audio`` binding's track, else the source."""
        audio = session.media.audio
        return audio.track() if audio is not None else SourceTrack(session.media.source)

    @staticmethod
    def _negotiated(session: _Session) -> None:
        if session.media.audio is not None:
            session.media.audio.negotiated(session.codec)

    def _tune(self, leg: _Leg) -> None:
        """Register the leg's ICE agents with ice_tuning (fast check retransmission)."""
        if not self.config.tune_ice:
            return
        for transceiver in leg.pc.getTransceivers():
            transport = getattr(transceiver.sender.transport, "transport", None)
            gatherer = getattr(transport, "iceGatherer", None)
            connection = getattr(gatherer, "_connection", None)  # aiortc has no accessor
            if connection is not None:
                ice_tuning.hold_relayed_checks(connection, 0.0)

    async def _accept_answer(self, session: _Session, leg: _Leg) -> None:
        assert session.remote_sdp is not None
        await leg.pc.setRemoteDescription(RTCSessionDescription(session.remote_sdp, "answer"))
        session.codec = _first_codec(session.remote_sdp)
        self._negotiated(session)
        leg.answered = True
        leg.started = time.monotonic()

    async def _receive(self, session: _Session, leg: _Leg, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            await session.video.consume(track)
            return
        audio = session.media.audio
        if audio is not None:  # the binding takes the audio (CallMedia.audio)
            transceiver = next((t for t in leg.pc.getTransceivers() if t.kind == "audio"), None)
            await audio.receive(track, transceiver, lambda: self._heard(session, leg, None))
            return
        while not session.call.ended:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._heard(session, leg, frame)

    def _heard(self, session: _Session, leg: _Leg, frame: object) -> bool:
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

    async def _close_media(self, session: _Session) -> None:
        for leg in (session.leg, session.pending):
            if leg is not None:
                self._close_leg(leg)
        if session.recorder is not None:
            session.recorder.close()
        session.ended.set()

    # ----------------------------------------------------------------- timers

    async def _ticker(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.call.ended:
                    continue
                transition = session.call.poll(now)
                if transition is not None:
                    await self._perform(session, transition)
                    continue
                if session.call.state is CallState.ANSWERED:
                    await self._watch_media(session, now)

    async def _watch_media(self, session: _Session, now: float) -> None:
        """Relay failover: silence on a live call makes the caller re-offer on the next path."""
        if session.call.direction is not CallDirection.OUTGOING or session.leg is None:
            return
        pending = session.pending
        if pending is not None:
            if now - pending.started < self.config.reoffer_timeout:
                return
            self._close_leg(pending)
            session.pending = None
        leg = session.leg
        if leg.last_frame_at is None:
            since, limit = leg.started, self.config.connect_grace
        else:
            since, limit = leg.last_frame_at, self.config.silence_after
        if now - since < limit:
            return
        if session.failovers >= self.config.max_failovers:
            await self._apply(session, CallEvent.MEDIA_FAILED)
            return
        session.failovers += 1
        logger.info("call media silent for %.1f s: re-offering on the next path", now - since)
        await self._apply(session, CallEvent.LOCAL_REOFFER)

    async def _on_reanswer(self, session: _Session) -> None:
        pending = session.pending
        assert pending is not None and session.remote_sdp is not None
        await pending.pc.setRemoteDescription(RTCSessionDescription(session.remote_sdp, "answer"))
        old, session.leg, session.pending = session.leg, pending, None
        self._negotiated(session)
        pending.answered = True
        pending.started = time.monotonic()
        if old is not None:
            self._close_leg(old)

    def _close_leg(self, leg: _Leg) -> None:
        """Close a connection in a task the service owns: a signal handler never waits on it."""
        if leg.closing:
            return
        leg.closing = True
        for receiver in leg.receivers:  # a track that never got media would wait forever
            receiver.cancel()
        assert self._tasks is not None
        self._tasks.create_task(self._bounded_close(leg))

    async def _bounded_close(self, leg: _Leg) -> None:
        # aioice deletes a TURN allocation on close and retransmits for ~40 s when the
        # relay is dead (the failover case): the connection is discarded anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(leg.pc.close(), CLOSE_LIMIT)

    def _session(self, call_id: bytes) -> _Session:
        session = self._sessions.get(call_id)
        if session is None:
            raise KeyError("no such call")
        return session

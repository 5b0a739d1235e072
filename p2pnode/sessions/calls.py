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

Where the parts live: this module drives signals, policy and the call machine;
``call_connections`` makes and closes the aiortc connections (and warm ones);
``call_failover`` decides when silence calls for a re-offer; ``call_legs`` holds
a call's session, its legs and the signal/action tables; ``call_sdp`` is the
public option for calls whose SDP an outside endpoint makes (``CallMedia(sdp=...)``:
no connection here, no silence watch, peers' re-offers held for the endpoint).

Bounds: at most ``max_calls`` live calls (more get BUSY), one pending and one held re-offer
per call, signals larger than the codec's limit are refused by the decoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

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
from p2pnode.sessions.call_connections import AiortcLegs
from p2pnode.sessions.call_failover import FailoverStep, pending_expired, silence_step
from p2pnode.sessions.call_legs import DECLINE_EVENTS, DECLINE_REASONS, REMOTE_EVENTS, SEND_KINDS
from p2pnode.sessions.call_legs import CallSession as _Session
from p2pnode.sessions.call_legs import SignalDrops as _Drops
from p2pnode.sessions.call_legs import path_kind as _path_kind
from p2pnode.sessions.call_sdp import (
    REOFFER_HELD,
    HeldReoffer,
    SdpSource,
    SourceLegs,
    StaleRenegotiationError,
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

__all__ = [
    "ENDED_CALLS_KEPT",
    "CallConfig",
    "CallMedia",
    "CallService",
    "CallStatistics",
    "CallUpdate",
    "HeldReoffer",
    "IceServer",
    "MediaPath",
    "NonContactPolicy",
    "SdpSource",
    "SignalSender",
    "StaleRenegotiationError",
]

logger = logging.getLogger(__name__)

TICK = 0.05  # seconds between deadline and silence checks
# Ended calls are kept so late signals of theirs are recognised and dropped; the
# oldest beyond this many are forgotten (a long-running node took every call it
# ever had to its grave).
ENDED_CALLS_KEPT = 256

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
        self._legs = AiortcLegs(lambda: self.config, self._report)
        self._outside = SourceLegs(lambda: self.config)  # CallMedia(sdp=...) calls
        self.drops = _Drops()

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> CallService:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._tasks.create_task(self._ticker())
        self._legs.start(self._tasks)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for session in list(self._sessions.values()):
            if not session.call.ended:
                with contextlib.suppress(CallStateError):
                    await self._apply(session, CallEvent.LOCAL_HANGUP)
            await self._close_media(session)
        self._stop.set()
        self._legs.stop()
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
        self._remember(session)
        aiortc = session.media.sdp is None and not session.media.video
        warm = self._legs.take_warm("offer", session) if aiortc else None
        if warm is not None and warm.offer_sdp is not None:
            session.leg = warm
            session.local_sdp = self._legs.reuse_offer(session, warm)
        else:
            maker = self._maker(session)
            session.leg = maker.new_leg(session, 0)
            session.local_sdp = await maker.offer(session, session.leg)
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
        return self._legs.warm_ready(role)

    def path(self, call_id: bytes) -> str | None:
        """How the call's media flows now, e.g. 'relay (relay->relay) via relay1'."""
        return _path_kind(self._session(call_id).leg)

    def peer(self, call_id: bytes) -> str:
        return self._session(call_id).peer

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

    def media(self, call_id: bytes) -> CallMedia:
        """What the call sends and records now (or whose ``SdpSource`` makes its SDP)."""
        return self._session(call_id).media

    def remote_sdp(self, call_id: bytes) -> str | None:
        """The peer's latest offer or answer for ``call_id`` (an endpoint applies it)."""
        return self._session(call_id).remote_sdp

    # -------------------------------------------------- renegotiation (SdpSource)

    async def reoffer(self, call_id: bytes, media: CallMedia | None = None) -> int:
        """Re-offer a live call from a new connection now; returns the re-offer's generation.

        For an ``SdpSource`` call, whose endpoint watches its own media, this is
        its failover: the source's ``reoffer()`` gives the SDP (``media`` may bring
        a new source), and the peer's re-answer reaches ``accept()``. A re-offer
        still unanswered is given up: only the newest can be answered.
        ``StaleRenegotiationError`` when the call is not live.
        """
        session = self._session(call_id)
        if session.call.state is not CallState.ANSWERED:
            raise StaleRenegotiationError("not a live call")
        if session.pending is not None:
            self._legs.close(session.pending)
            session.pending = None
        if media is not None:
            session.media = media
        await self._apply(session, CallEvent.LOCAL_REOFFER)
        return session.generation

    def waiting_reoffer(self, call_id: bytes) -> HeldReoffer | None:
        """The peer's newest re-offer waiting for an ``SdpSource`` call's endpoint, if any."""
        return self._session(call_id).held

    async def answer_reoffer(
        self, call_id: bytes, generation: int, media: CallMedia | None = None
    ) -> None:
        """The endpoint is ready to answer held re-offer ``generation``: the source's
        ``answer(remote)`` (``media`` may bring a new source) goes as the re-answer.

        ``StaleRenegotiationError`` when that re-offer is not the one waiting.
        """
        session = self._session(call_id)
        held = session.held
        if held is None or held.generation != generation or session.call.ended:
            raise StaleRenegotiationError("no such re-offer waiting")
        session.held = None
        if media is not None:
            session.media = media
        session.remote_sdp = held.sdp
        session.generation = held.generation
        try:
            await self._apply(session, CallEvent.REMOTE_REOFFER)
        except CallStateError:
            self.drops.drop(f"reoffer in state {session.call.state.value}")

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
        if signal.kind is SignalKind.REOFFER and signal.sdp and session.media.sdp is not None:
            self._hold_reoffer(session, signal.generation, signal.sdp)
            return
        if signal.dtmf is not None:
            self._on_dtmf(session, signal.dtmf)
            return
        if signal.caller is not None:
            self._on_caller(session, signal.caller)
            return
        event = REMOTE_EVENTS.get(signal.kind)
        if signal.kind is SignalKind.DECLINE:
            event = DECLINE_EVENTS[signal.reason or DeclineReason.DECLINED]
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

    def _hold_reoffer(self, session: _Session, generation: int, sdp: str) -> None:
        """An ``SdpSource`` call's re-offer waits for its endpoint (``answer_reoffer``)."""
        held = session.held
        if generation <= max(session.generation, held.generation if held else 0):
            self.drops.drop("stale reoffer")
        elif session.call.state is not CallState.ANSWERED:
            self.drops.drop(f"reoffer in state {session.call.state.value}")
        else:
            session.held = HeldReoffer(generation, sdp)  # only the newest can be answered
            self._report(session, REOFFER_HELD)

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

    def _remember(self, session: _Session) -> None:
        """Track a new call; forget the oldest ended ones beyond ENDED_CALLS_KEPT."""
        self._sessions[session.call_id] = session
        ended = [k for k, s in self._sessions.items() if s.call.ended]
        for call_id in ended[: max(0, len(ended) - ENDED_CALLS_KEPT)]:
            del self._sessions[call_id]

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
        self._remember(session)
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
        kind = SEND_KINDS.get(action)
        maker = self._maker(session)
        if action is CallAction.SEND_ANSWER:
            aiortc = session.media.sdp is None and session.generation == 0
            warm = self._legs.take_warm("answer", session) if aiortc else None
            session.leg = warm or maker.new_leg(session, session.generation)
            sdp = await maker.answer(session, session.leg)
            await self._signal(session, SignalKind.ANSWER, sdp=sdp)
        elif action is CallAction.SEND_REOFFER:
            session.generation += 1
            session.pending = maker.new_leg(session, session.generation)
            sdp = await maker.offer(session, session.pending)
            await self._signal(session, SignalKind.REOFFER, sdp=sdp)
        elif action is CallAction.SEND_REANSWER:
            old = session.leg
            session.leg = maker.new_leg(session, session.generation)
            sdp = await maker.answer(session, session.leg)
            await self._signal(session, SignalKind.REANSWER, sdp=sdp)
            if old is not None:
                self._legs.close(old)
        elif action is CallAction.SEND_INVITE:
            await self._signal(session, SignalKind.INVITE, sdp=session.local_sdp)
        elif action is CallAction.START_MEDIA:
            if session.call.direction is CallDirection.OUTGOING and session.leg is not None:
                await maker.accept(session, session.leg)
        elif action is CallAction.STOP_MEDIA:
            await self._close_media(session)
        elif kind is not None:
            reason = DECLINE_REASONS.get(action)
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

    async def _close_media(self, session: _Session) -> None:
        for leg in (session.leg, session.pending):
            if leg is not None:
                self._legs.close(leg)
        if session.recorder is not None:
            session.recorder.close()
        session.held = None  # a held re-offer of an ended call is never answered
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
        if session.media.sdp is not None:
            return  # the node hears nothing of it: the SdpSource's endpoint watches its media
        pending = session.pending
        if pending is not None:
            if not pending_expired(pending, self.config, now):
                return
            self._legs.close(pending)
            session.pending = None
        step = silence_step(session.leg, session.failovers, self.config, now)
        if step is FailoverStep.FAIL:
            await self._apply(session, CallEvent.MEDIA_FAILED)
        elif step is FailoverStep.REOFFER:
            session.failovers += 1
            logger.info("call media silent: re-offering on the next path")
            await self._apply(session, CallEvent.LOCAL_REOFFER)

    async def _on_reanswer(self, session: _Session) -> None:
        pending = session.pending
        assert pending is not None and session.remote_sdp is not None
        await self._maker(session).reanswered(session, pending)
        old, session.leg, session.pending = session.leg, pending, None
        if old is not None:
            self._legs.close(old)

    def _maker(self, session: _Session) -> AiortcLegs | SourceLegs:
        """Who makes the call's connections and SDP: aiortc, or the media's ``SdpSource``."""
        return self._legs if session.media.sdp is None else self._outside

    def _session(self, call_id: bytes) -> _Session:
        session = self._sessions.get(call_id)
        if session is None:
            raise KeyError("no such call")
        return session

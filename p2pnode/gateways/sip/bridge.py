"""The SIP <-> P2P bridge controller: a P2P call to a hosted identity rings its phones.

Composition, no hooks in the gateway or the calls service:

* The bridge's P2P side is a :class:`BridgedCallService` (a
  :class:`~p2pnode.sessions.calls.CallService` for the hosted identity, by
  subclassing: it overrides the private ``_make_offer``/``_make_answer``/
  ``_accept_answer``/``_receive`` steps) whose received audio is also teed to
  the phone leg and whose sender track is swapped for a
  :class:`~p2pnode.gateways.sip.bridge_tracks.PhoneAudioTrack` reading the
  phone's jitter buffer.
* The bridge's SIP side is a :class:`BridgeUserAgent`, our own small UA with an
  account at the gateway. To ring ``alice`` it INVITEs ``alice@domain`` through
  the gateway, which forks to every registered device of alice (first answer
  wins, the others get CANCEL - the gateway's B2BUA does that) and anchors the
  media. The RTP it receives goes to a
  :class:`~p2pnode.gateways.sip.bridge_tracks.PhoneRtpLeg` (jitter buffer, RFC
  4733 digits, rewriting, 20 ms pacing).

End reasons cross the bridge: a phone that answers 486 makes the P2P caller
see a decline (busy), 408/480/no answer likewise; a phone that hangs up ends
the P2P call, a P2P hang-up sends BYE to the phone.

Phone -> peer passes G.711 through untouched when the WebRTC leg negotiated
the phone's law (PCMU here); peer -> phone is always decoded by aiortc and
re-encoded to PCMU (see docs/sip-bridge.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from p2pnode.gateways.sip.bridge_chat import MessageUserAgent
from p2pnode.gateways.sip.bridge_media import (
    BridgeCodec,
    DtmfDigit,
    PhoneReceiver,
    PhoneSender,
    choose_media_path,
)
from p2pnode.gateways.sip.bridge_routing import (
    NOT_THIS_BRIDGE,
    BridgeCallers,
    ForeignCallGate,
    ForeignCallPolicy,
    takes_caller,
)
from p2pnode.gateways.sip.bridge_tracks import PhoneAudioTrack, PhoneRtpLeg
from p2pnode.gateways.sip.dialog import Dialog
from p2pnode.gateways.sip.headers import SipUri, Uri
from p2pnode.gateways.sip.message import build_response
from p2pnode.gateways.sip.sdp import Direction, SdpDecodeError, parse_sdp
from p2pnode.gateways.sip.transaction import RequestReceived
from p2pnode.gateways.sip.useragent import (
    UaCall,
    UaError,
    _media,
    _Rtp,
)
from p2pnode.sessions.call import CallDirection, CallState, CallStateError
from p2pnode.sessions.call_signal import RelayedCaller
from p2pnode.sessions.calls import CallMedia, CallService, CallUpdate

__all__ = [
    "BRIDGE_QUEUE_FRAMES",
    "MAX_QUEUED_DIGITS",
    "BridgeEvent",
    "BridgeUserAgent",
    "BridgedCallService",
    "ForeignCallGate",
    "ForeignCallPolicy",
    "SipP2pBridge",
]

_LOG = logging.getLogger(__name__)
MAX_QUEUED_DIGITS = 64  # phone digits waiting to be signalled to the peer, per call
MAX_PENDING_INVITES = 16  # phone calls waiting for the bridge to dial their peer
BRIDGE_QUEUE_FRAMES = 25  # peer -> phone frames held between the tee and the RTP leg
PT_PCMU = 0
PT_DTMF = 101  # what our UA's offer names telephone-event
# P2P end state of an unanswered outgoing call -> the phone's final response.
_REFUSAL = {
    CallState.DECLINED: (603, "Decline"),
    CallState.BUSY: (486, "Busy Here"),
    CallState.NO_ANSWER: (480, "Temporarily Unavailable"),
    CallState.REFUSED: (403, "Forbidden"),
    CallState.FAILED: (480, "Temporarily Unavailable"),
    CallState.CANCELLED: (487, "Request Terminated"),
    CallState.HUNG_UP: (487, "Request Terminated"),
}
_TERMINAL = {
    CallState.DECLINED,
    CallState.BUSY,
    CallState.NO_ANSWER,
    CallState.CANCELLED,
    CallState.HUNG_UP,
    CallState.REFUSED,
    CallState.FAILED,
}


@dataclass(frozen=True, slots=True)
class BridgeEvent:
    """One per-call observation for the control API and metrics."""

    call_id: bytes
    what: str  # "ringing-phones", "phone-answered", "phone-refused", "digit", "ended"
    detail: str = ""


class _FrameQueueTrack(MediaStreamTrack):
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

    @staticmethod
    def _negotiated(session: Any, track: PhoneAudioTrack) -> None:
        name = str(getattr(session, "codec", None) or "").removeprefix("audio/")
        codec = BridgeCodec.from_name(name)
        if codec is not None:
            track.set_webrtc_codec(codec)

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
            self._negotiated(session, track)
        return sdp

    async def _accept_answer(self, session: Any, leg: Any) -> None:
        await super()._accept_answer(session, leg)
        track = self.tracks.get(session.call_id)
        if track is not None:
            self._negotiated(session, track)

    async def _receive(self, session: object, leg: object, track: MediaStreamTrack) -> None:
        call_id = getattr(session, "call_id", b"")

        def sink(frame: av.AudioFrame) -> None:
            target = self.sinks.get(call_id)
            if target is not None:
                target(frame)

        tee = _TeeTrack(track, sink) if track.kind == "audio" else track
        await super()._receive(session, leg, tee)  # type: ignore[arg-type]


class BridgeUserAgent(MessageUserAgent):
    """Our UA (MESSAGE too) with every call's RTP going to a bridge leg, not a recorder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.legs: dict[int, PhoneRtpLeg] = {}
        # Per RTP port (one per call): who hears that call's digits and hold changes.
        self.digit_handlers: dict[int, Callable[[DtmfDigit], None]] = {}
        self.hold_handlers: dict[int, Callable[[bool], None]] = {}
        self.invites: asyncio.Queue[RequestReceived] = asyncio.Queue(maxsize=MAX_PENDING_INVITES)
        self.auto_answer = False

    def _incoming(self, effect: RequestReceived) -> None:
        request = effect.request
        if request.method == "INVITE" and request.to.tag is None:
            if self.invites.full():
                self.stack.respond(effect.key, build_response(request, 486, "Busy Here"))
            else:
                self.stack.respond(effect.key, build_response(request, 100, "Trying"))
                self.invites.put_nowait(effect)
            return
        call = self._calls.get(request.call_id)
        if request.method == "INVITE" and call is not None:
            self._reinvite(effect, call)
            return
        super()._incoming(effect)

    def _reinvite(self, effect: RequestReceived, call: UaCall) -> None:
        """RFC 3264 §8.4 hold/resume: the P2P leg stays up, only the phone leg changes."""
        request = effect.request
        port = int(call.rtp.get_extra_info("sockname")[1])
        leg = self.legs.get(port)
        direction = Direction.SENDRECV
        address: tuple[str, int] | None = None
        if request.body:
            try:
                sdp = parse_sdp(request.body)
            except SdpDecodeError:
                self.stack.respond(effect.key, build_response(request, 488, "Not Acceptable Here"))
                return
            audio = next((m for m in sdp.media if m.media == "audio"), None)
            if audio is not None:
                direction = sdp.direction(audio)
                host = sdp.address(audio)
                if host not in (None, "0.0.0.0") and audio.port:  # RFC 2543 hold: c=0.0.0.0
                    address = (str(host), audio.port)
                else:
                    direction = Direction.INACTIVE
        held = direction in (Direction.SENDONLY, Direction.INACTIVE)
        if leg is not None:
            leg.held = held  # we do not send while the phone holds us (it may play music)
            if address is not None:
                leg.set_remote(address)
        on_hold = self.hold_handlers.get(port)
        if on_hold is not None:
            on_hold(held)
        call.dialog = replace(call.dialog, remote_seq=request.cseq.number)
        answer = self._sdp(port).replace(b"a=sendrecv", f"a={direction.reversed().value}".encode())
        ok = build_response(
            request, 200, "OK", ("Contact", self.contact()),
            ("Content-Type", "application/sdp"), body=answer,
        )  # fmt: skip
        self.stack.respond(effect.key, ok)

    async def open_leg(self) -> tuple[asyncio.DatagramTransport, PhoneRtpLeg]:
        transport, _ = await self._open_rtp()
        return transport, self.legs[int(transport.get_extra_info("sockname")[1])]

    def accept(
        self, effect: RequestReceived, transport: asyncio.DatagramTransport, tag: str
    ) -> UaCall:
        """200 OK with our RTP leg's SDP; the call is then known to BYE handling."""
        request = effect.request
        port = int(transport.get_extra_info("sockname")[1])
        dialog = Dialog.from_uas(request, tag, confirmed=True)
        call = UaCall(
            self, dialog, effect.source, transport, _media(request.body), [], asyncio.Event()
        )
        self._calls[request.call_id] = call
        ok = build_response(
            request, 200, "OK", ("Contact", self.contact()),
            ("Content-Type", "application/sdp"), to_tag=tag, body=self._sdp(port),
        )  # fmt: skip
        self.stack.respond(effect.key, ok)
        return call

    def refuse(self, effect: RequestReceived, status: int, reason: str, tag: str) -> None:
        self.stack.respond(effect.key, build_response(effect.request, status, reason, to_tag=tag))

    def ringing(self, effect: RequestReceived, tag: str) -> None:
        response = build_response(
            effect.request, 180, "Ringing", ("Contact", self.contact()), to_tag=tag
        )
        self.stack.respond(effect.key, response)

    def _forget_closed_legs(self) -> None:
        """Legs of ended calls go; what the UA holds stays bounded by the calls in progress."""
        for port, leg in list(self.legs.items()):
            if leg.transport is None or leg.transport.is_closing():
                del self.legs[port]
                self.digit_handlers.pop(port, None)
                self.hold_handlers.pop(port, None)

    async def _open_rtp(self) -> tuple[asyncio.DatagramTransport, _Rtp]:
        self._forget_closed_legs()
        receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF)
        sender = PhoneSender(
            ssrc=int.from_bytes(self.randbytes(4), "big"),
            payload_type=PT_PCMU,
            first_sequence=int.from_bytes(self.randbytes(2), "big"),
            first_timestamp=int.from_bytes(self.randbytes(4), "big"),
        )
        leg = PhoneRtpLeg(receiver, sender, BridgeCodec.PCMU)
        _, port = await leg.open(self.host)
        self.legs[port] = leg

        def digit(found: DtmfDigit) -> None:
            handler = self.digit_handlers.get(port)
            if handler is not None:
                handler(found)

        leg.on_digit = digit
        transport = leg.transport
        assert transport is not None
        return transport, _Rtp()  # the recorder protocol stays detached


class SipP2pBridge:
    """Rings the hosted login's phones for every P2P call to the hosted identity."""

    def __init__(
        self,
        calls: BridgedCallService,
        ua: BridgeUserAgent,
        hosted_login: str,
        *,
        peers: Callable[[str], str | None] = lambda _login: None,
        resolve: Callable[[str], Awaitable[str | None]] | None = None,
        ring_timeout: float = 30.0,
        foreign: ForeignCallPolicy | None = None,
        callers: BridgeCallers = BridgeCallers.ANY,
    ) -> None:
        """``peers`` maps a login the phone dialled to the P2P peer id to call (None: 404).

        ``resolve`` is asked next, for what ``peers`` does not know: the
        directory lookup of a login, peer id or number
        (:meth:`~p2pnode.gateways.sip.bridge_routing.PeerResolver.peer_id`).
        ``callers``: whose phone calls this bridge places (the others get 503).
        """
        self.calls = calls
        self.ua = ua
        self.hosted_login = hosted_login
        self.ring_timeout = ring_timeout
        self.peers = peers
        self.resolve = resolve
        self.callers = callers
        self.foreign = ForeignCallGate(foreign or ForeignCallPolicy(), ua.domain)
        self._answered: dict[bytes, asyncio.Future[CallState]] = {}
        self._states: dict[bytes, CallState] = {}  # the latest state of each bridged call
        self.events: asyncio.Queue[BridgeEvent] = asyncio.Queue(maxsize=1024)
        self.digits: dict[bytes, list[DtmfDigit]] = {}
        self._digit_queues: dict[bytes, asyncio.Queue[DtmfDigit]] = {}
        self._legs: dict[bytes, PhoneRtpLeg] = {}  # each bridged call's phone leg
        self.digits_dropped = 0  # digits a full per-call queue could not take
        self._phone_calls: dict[bytes, UaCall] = {}
        self._dialling = asyncio.Lock()
        self._ended: dict[bytes, asyncio.Event] = {}

    def _event(self, call_id: bytes, what: str, detail: str = "") -> None:
        if not self.events.full():
            self.events.put_nowait(BridgeEvent(call_id, what, detail))

    async def run(self) -> None:
        """Serve until cancelled; every bridged call is a task of this group."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._serve_invites(group))
            while True:
                update = await self.calls.wait_update()
                self._states[update.call_id] = update.state
                self._settle(update.call_id)
                if update.state in _TERMINAL:
                    self._states.pop(update.call_id, None)
                if (
                    update.direction is CallDirection.INCOMING
                    and update.state is CallState.RINGING_LOCAL
                    and update.call_id not in self._ended
                ):
                    self._ended[update.call_id] = asyncio.Event()
                    group.create_task(self._guarded(update.call_id, self._bridge_incoming(update)))
                elif update.state in _TERMINAL and update.call_id in self._ended:
                    self._ended[update.call_id].set()
                if update.dtmf is not None:
                    self._digit_to_phone(update.call_id, update.dtmf)

    async def _bridge_incoming(self, update: CallUpdate) -> None:
        call_id = update.call_id
        self._event(call_id, "ringing-phones", self.hosted_login)
        try:
            async with asyncio.timeout(self.ring_timeout):
                phone = await self.ua.call(self.hosted_login)
        except (UaError, TimeoutError) as error:
            status = error.status if isinstance(error, UaError) else 408
            self._event(call_id, "phone-refused", str(status))
            # SIP 486/600/603/408/480 -> the P2P caller sees the call declined.
            with contextlib.suppress(CallStateError, KeyError):
                await self.calls.decline(call_id)
            return
        port = int(phone.rtp.get_extra_info("sockname")[1])
        leg = self.ua.legs[port]
        queue_track = self._attach(call_id, port, leg)
        self.calls.tracks[call_id] = self._track(leg)
        await self.calls.answer(call_id, CallMedia())
        self._event(call_id, "phone-answered", "PCMU")
        await self._carry(call_id, phone, leg, queue_track)

    @staticmethod
    def _track(leg: PhoneRtpLeg) -> PhoneAudioTrack:
        # Transcoding until the WebRTC codec is negotiated; passthrough if it is PCMU.
        return PhoneAudioTrack(leg.receiver, choose_media_path(BridgeCodec.PCMU, BridgeCodec.OPUS))

    def _attach(self, call_id: bytes, port: int, leg: PhoneRtpLeg) -> _FrameQueueTrack:
        self.digits[call_id] = []
        self._digit_queues[call_id] = asyncio.Queue(MAX_QUEUED_DIGITS)
        self._legs[call_id] = leg
        self.ua.digit_handlers[port] = lambda digit: self._digit(call_id, digit)
        self.ua.hold_handlers[port] = lambda held: self._hold(call_id, held)
        queue_track = _FrameQueueTrack()
        self.calls.sinks[call_id] = queue_track.offer
        return queue_track

    async def _carry(
        self, call_id: bytes, phone: UaCall, leg: PhoneRtpLeg, queue_track: _FrameQueueTrack
    ) -> None:
        """Media both ways until either side hangs up; then end the other side."""
        if phone.remote_media is not None:
            leg.set_remote(phone.remote_media)
        self._phone_calls[call_id] = phone
        async with asyncio.TaskGroup() as group:
            media = group.create_task(leg.run(queue_track))
            signaller = group.create_task(self._signal_digits(call_id))
            ended = group.create_task(self._ended[call_id].wait())
            phone_gone = group.create_task(phone.ended.wait())
            done, _ = await asyncio.wait({ended, phone_gone}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            phone_gone.cancel()
            if ended in done:
                with contextlib.suppress(UaError, TimeoutError):
                    async with asyncio.timeout(5):
                        await phone.hangup()  # the P2P side hung up: BYE to the phone
            else:
                with contextlib.suppress(CallStateError, KeyError):
                    await self.calls.hangup(call_id)  # the phone hung up
            self.calls.sinks.pop(call_id, None)
            queue_track.offer(None)
            leg.close()
            signaller.cancel()
            await media
        self._digit_queues.pop(call_id, None)
        self._legs.pop(call_id, None)
        self._phone_calls.pop(call_id, None)
        self._ended.pop(call_id, None)
        stats = leg.receiver.statistics()
        track = self.calls.tracks.pop(call_id, None)
        counts = track.statistics() if track is not None else None
        if track is not None:
            track.stop()
        self._event(
            call_id,
            "ended",
            f"received={stats.received} lost={stats.lost} jitter_ms={stats.jitter_ms:.1f} "
            f"to_phone={leg.sender.sent} "
            + "".join(f"dropped_{reason.value}={count} " for reason, count in stats.dropped)
            + f"from_peer={leg.frames_from_peer} "
            f"passthrough={counts.passthrough_frames if counts else 0} "
            f"transcoded={counts.transcoded_frames if counts else 0}",
        )

    def _settle(self, call_id: bytes) -> None:
        waiting = self._answered.get(call_id)
        state = self._states.get(call_id)
        if waiting is None or waiting.done() or state is None:
            return
        if state is CallState.ANSWERED or state in _TERMINAL:
            waiting.set_result(state)

    async def _guarded(
        self,
        call_id: bytes | None,
        work: Coroutine[Any, Any, None],
        effect: RequestReceived | None = None,
    ) -> None:
        """One bridged call failing (signalling down, a peer unknown) never stops the bridge."""
        try:
            await work
        except (OSError, LookupError, UaError, CallStateError, RuntimeError) as error:
            _LOG.warning("bridged call failed: %s", type(error).__name__)
            if call_id is not None:
                self._event(call_id, "failed", type(error).__name__)
            if effect is not None:
                with contextlib.suppress(Exception):
                    self.ua.refuse(effect, 480, "Temporarily Unavailable", self.ua.token())

    async def _serve_invites(self, group: asyncio.TaskGroup) -> None:
        while True:
            effect = await self.ua.invites.get()
            group.create_task(self._guarded(None, self._bridge_outgoing(effect), effect))

    async def _bridge_outgoing(self, effect: RequestReceived) -> None:
        """A phone dialled a login the bridge stands for: call that peer as the hosted identity."""
        tag = self.ua.token()
        login = effect.request.to.uri.user if isinstance(effect.request.to.uri, SipUri) else None
        caller = effect.request.from_.uri
        domain = caller.host if isinstance(caller, SipUri) else ""
        if not takes_caller(self.callers, caller, self.ua.domain, self.hosted_login):
            self.ua.refuse(effect, *NOT_THIS_BRIDGE, tag)
            return
        # Admission first: a foreign network's calls cost directory lookups too.
        refusal = self.foreign.admit(domain, asyncio.get_running_loop().time())
        if refusal is not None:
            self.ua.refuse(effect, *refusal, tag)
            return
        peer = self.peers(login) if login else None
        if peer is None and login and self.resolve is not None:
            peer = await self.resolve(login)
        if peer is None:
            self.ua.refuse(effect, 404, "Not Found", tag)
            return
        transport, leg = await self.ua.open_leg()
        loop = asyncio.get_running_loop()
        async with self._dialling:  # next_track belongs to one dial() at a time
            self.calls.next_track = self._track(leg)
            call_id = await self.calls.dial(peer, CallMedia())
        self._ended[call_id] = asyncio.Event()
        await self._tell_caller(call_id, caller)
        answered: asyncio.Future[CallState] = loop.create_future()
        self._answered[call_id] = answered
        self._settle(call_id)  # the peer may have answered while dial() was still awaiting
        queue_track = self._attach(call_id, int(transport.get_extra_info("sockname")[1]), leg)
        self._event(call_id, "dialling-peer", peer)
        self.ua.ringing(effect, tag)
        try:
            async with asyncio.timeout(self.ring_timeout):
                state = await answered
        except TimeoutError:
            state = CallState.NO_ANSWER
            with contextlib.suppress(CallStateError, KeyError):
                await self.calls.hangup(call_id)
        finally:
            self._answered.pop(call_id, None)
        if state is not CallState.ANSWERED:
            status, reason = _REFUSAL.get(state, (480, "Temporarily Unavailable"))
            self.ua.refuse(effect, status, reason, tag)
            self.calls.sinks.pop(call_id, None)
            self._digit_queues.pop(call_id, None)
            self._legs.pop(call_id, None)
            leg.close()
            self._event(call_id, "peer-refused", str(status))
            return
        phone = self.ua.accept(effect, transport, tag)
        self._event(call_id, "peer-answered", "PCMU")
        await self._carry(call_id, phone, leg, queue_track)

    async def _tell_caller(self, call_id: bytes, caller: Uri) -> None:
        """A caller other than the hosted user: the peer hears who, and whether it is proven.

        The gateway authenticated a From in its own domain; a foreign From is
        only what the other network said. Unrenderable Froms are not relayed.
        """
        if takes_caller(BridgeCallers.HOSTED, caller, self.ua.domain, self.hosted_login):
            return  # the P2P identity is the caller's own
        local = isinstance(caller, SipUri) and caller.host.lower() == self.ua.domain.lower()
        try:
            relayed = RelayedCaller(str(caller), local)
        except ValueError:
            return
        with contextlib.suppress(KeyError):
            await self.calls.send_caller(call_id, relayed)

    def _digit_to_phone(self, call_id: bytes, digit: str) -> None:
        """The peer keyed a digit: RFC 4733 to the phone, in its RTP stream, 20 ms a packet."""
        leg = self._legs.get(call_id)
        if leg is None or not leg.send_digit(digit, PT_DTMF):
            self.digits_dropped += 1
            return
        self._event(call_id, "digit-to-phone", digit)

    def _hold(self, call_id: bytes, held: bool) -> None:
        self._event(call_id, "hold" if held else "resume")

    def _digit(self, call_id: bytes, digit: DtmfDigit) -> None:
        self.digits[call_id].append(digit)
        self._event(call_id, "digit", digit.digit)
        queue = self._digit_queues.get(call_id)
        if queue is None or queue.full():
            self.digits_dropped += 1
            return
        queue.put_nowait(digit)

    async def _signal_digits(self, call_id: bytes) -> None:
        """The phone's RFC 4733 digits go to the peer as DTMF signals, one at a time, in order."""
        queue = self._digit_queues[call_id]
        while True:
            digit = await queue.get()
            try:
                await self.calls.send_dtmf(call_id, digit.digit, digit.duration_ms)
            except (CallStateError, KeyError, ValueError, OSError):
                self.digits_dropped += 1  # the P2P call is ending or not yet answered

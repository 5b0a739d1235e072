"""The SIP <-> P2P bridge controller: a P2P call to a hosted identity rings its phones.

Composition, no hooks in the gateway or the calls service:

* The bridge's P2P side is a :class:`~.bridge_calls.BridgedCallService` (a
  calls service for the hosted identity); each bridged call carries the
  phone leg's audio as ``CallMedia(audio=PhoneCallAudio(leg))``
  (:class:`~p2pnode.gateways.sip.bridge_tracks.PhoneCallAudio`).
* The bridge's SIP side is a :class:`~.bridge_ua.BridgeUserAgent`, our own
  small UA with an account at the gateway. To ring ``alice`` it INVITEs ``alice@domain`` through
  the gateway, which forks to every registered device of alice (first answer
  wins, the others get CANCEL - the gateway's B2BUA does that) and anchors the
  media. The RTP it receives goes to a
  :class:`~p2pnode.gateways.sip.bridge_tracks.PhoneRtpLeg` (jitter buffer, RFC
  4733 digits, rewriting, 20 ms pacing).

End reasons cross the bridge: a phone that answers 486 makes the P2P caller
see a decline (busy), 408/480/no answer likewise; a phone that hangs up ends
the P2P call, a P2P hang-up sends BYE to the phone.

Audio passes through untouched both ways when the WebRTC leg negotiated the
phone's codec (PCMU, PCMA, G.722 or opus): phone -> peer as RTP built on the
media clock (``DirectRtp``), peer -> phone as RTP payloads taken at aiortc's
receiver; any other pair is decoded by aiortc and re-encoded (see
docs/sip-bridge.md). So the legs ask for each other's codecs first: ringing
the phones for a peer's call, the INVITE lists the peer's offered codecs
first, in its order (the phone then picks the peer's favourite it has);
placing the call, the offer lists the phone's codecs first (those the calls service's
``audio_codecs`` has, in the phone's order) and the phone is answered with
the one the peer took; answering, the answer names the phone's codec alone
when the peer's offer lists it (``CallMedia.audio_codecs``).

Bounds: the per-call tables hold the calls in progress only and are emptied
at each call's end (also when the phones never answer); ``digits`` keeps the
newest ``MAX_KEPT_DIGIT_CALLS`` calls, ``MAX_DIGITS_PER_CALL`` digits each, so
a phone keying forever or a long-running bridge cannot grow it; ``events`` is
a bounded queue (the newest are counted and dropped when nobody reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from p2pnode.gateways.sip.bridge_calls import BridgedCallService
from p2pnode.gateways.sip.bridge_codecs import (
    BridgeCodec,
    choose_media_path,
    p2p_codec_order,
    peer_codecs,
)
from p2pnode.gateways.sip.bridge_media import DtmfDigit
from p2pnode.gateways.sip.bridge_routing import (
    NOT_THIS_BRIDGE,
    BridgeCallers,
    ForeignCallGate,
    ForeignCallPolicy,
    takes_caller,
)
from p2pnode.gateways.sip.bridge_summary import (
    BridgedCallSummary,
    BridgeDirection,
    BridgeEvent,
    BridgeMode,
    BridgeStatistics,
    ended_detail,
)
from p2pnode.gateways.sip.bridge_tracks import PhoneCallAudio, PhoneRtpLeg
from p2pnode.gateways.sip.bridge_ua import PT_DTMF, BridgeUserAgent, phone_formats
from p2pnode.gateways.sip.headers import SipUri, Uri
from p2pnode.gateways.sip.transaction import RequestReceived
from p2pnode.gateways.sip.useragent import UaCall, UaError
from p2pnode.sessions.call import CallDirection, CallState, CallStateError
from p2pnode.sessions.call_signal import RelayedCaller
from p2pnode.sessions.calls import CallMedia, CallUpdate

__all__ = [
    "MAX_DIGITS_PER_CALL",
    "MAX_KEPT_DIGIT_CALLS",
    "MAX_QUEUED_DIGITS",
    "BridgeDirection",
    "BridgeEvent",
    "BridgeMode",
    "BridgeStatistics",
    "BridgeUserAgent",
    "BridgedCallService",
    "BridgedCallSummary",
    "ForeignCallGate",
    "ForeignCallPolicy",
    "SipP2pBridge",
]

_LOG = logging.getLogger(__name__)
MAX_QUEUED_DIGITS = 64  # phone digits waiting to be signalled to the peer, per call
MAX_DIGITS_PER_CALL = 256  # phone digits remembered per call in ``digits`` (the rest counted)
MAX_KEPT_DIGIT_CALLS = 64  # calls whose digits ``digits`` remembers, the newest
MAX_EVENTS = 1024  # events waiting for a reader; the newest are dropped beyond
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


def _mode(phone: BridgeCodec, codec: BridgeCodec | None) -> BridgeMode:
    if codec is not None and choose_media_path(phone, codec).passthrough:
        return BridgeMode.PASSTHROUGH
    return BridgeMode.TRANSCODED


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
        own_bridges: frozenset[str] = frozenset(),
    ) -> None:
        """``peers`` maps a login the phone dialled to the P2P peer id to call (None: 404).

        ``resolve`` is asked next, for what ``peers`` does not know: the
        directory lookup of a login, peer id or number
        (:meth:`~p2pnode.gateways.sip.bridge_routing.PeerResolver.peer_id`).
        ``callers``: whose phone calls this bridge places (the others get 503);
        ``own_bridges``: with ``OTHERS``, the local logins left to their own bridge.
        """
        self.calls = calls
        self.ua = ua
        self.hosted_login = hosted_login
        self.ring_timeout = ring_timeout
        self.peers = peers
        self.resolve = resolve
        self.callers = callers
        self.own_bridges = own_bridges
        self.foreign = ForeignCallGate(foreign or ForeignCallPolicy(), ua.domain)
        self._answered: dict[bytes, asyncio.Future[CallState]] = {}
        self._states: dict[bytes, CallState] = {}  # the latest state of each bridged call
        self.events: asyncio.Queue[BridgeEvent] = asyncio.Queue(maxsize=MAX_EVENTS)
        self.digits: OrderedDict[bytes, list[DtmfDigit]] = OrderedDict()
        self._digit_queues: dict[bytes, asyncio.Queue[DtmfDigit]] = {}
        self._legs: dict[bytes, PhoneRtpLeg] = {}  # each bridged call's phone leg
        self.digits_dropped = 0  # digits a full per-call queue could not take
        self._phone_calls: dict[bytes, UaCall] = {}
        self._ended: dict[bytes, asyncio.Event] = {}
        self._calls: Counter[tuple[BridgeDirection, BridgeMode]] = Counter()
        self._refusals: Counter[str] = Counter()
        self._totals: Counter[str] = Counter()
        self.on_event: Callable[[BridgeEvent], None] = lambda _event: None

    def _event(
        self, call_id: bytes, what: str, detail: str = "", summary: BridgedCallSummary | None = None
    ) -> None:
        event = BridgeEvent(call_id, what, detail, summary)
        self.on_event(event)
        if self.events.full():
            self._totals["events_dropped"] += 1
        else:
            self.events.put_nowait(event)

    def _refused(self, reason: str) -> None:
        self._refusals[reason] += 1

    def call_legs(self) -> dict[bytes, PhoneRtpLeg]:
        """Each bridged call's phone leg by P2P call id (a copy; calls in progress only).

        Why: the control API names the live legs by the call id its events and
        ended calls carry. A leg whose P2P call is not placed or answered yet
        is not here.
        """
        return dict(self._legs)

    def statistics(self) -> BridgeStatistics:
        t = self._totals
        return BridgeStatistics(
            active_calls=len(self._phone_calls),
            calls=tuple((d, m, n) for (d, m), n in sorted(self._calls.items(), key=_key)),
            refusals=tuple(sorted((self._refusals + self.foreign.refusals).items())),
            packets_from_phone=t["from_phone"],
            packets_to_phone=t["to_phone"],
            lost=t["lost"],
            passthrough_frames=t["passthrough"],
            transcoded_frames=t["transcoded"],
            digits_from_phone=t["digits_from_phone"],
            digits_to_phone=t["digits_to_phone"],
            digits_dropped=self.digits_dropped + t["digits_unkept"],
            events_dropped=t["events_dropped"],
        )

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
                phone = await self.ua.call(self.hosted_login, self._peer_offer(call_id))
        except (UaError, TimeoutError) as error:
            status = error.status if isinstance(error, UaError) else 408
            self._event(call_id, "phone-refused", str(status))
            self._refused(f"phone-{status}")
            self._ended.pop(call_id, None)
            # SIP 486/600/603/408/480 -> the P2P caller sees the call declined.
            with contextlib.suppress(CallStateError, KeyError):
                await self.calls.decline(call_id)
            return
        port = int(phone.rtp.get_extra_info("sockname")[1])
        leg = self.ua.legs[port]
        self._attach(call_id, port, leg)
        # The call's audio is the phone leg's: it passes through when the peer
        # negotiates the phone's codec (sessions.media.CallAudio).
        audio = PhoneCallAudio(leg)
        # The phone answered first, so its codec is known: the P2P answer names it
        # when the peer offered it (passthrough both ways).
        codecs = (leg.codec.value,)
        await self.calls.answer(call_id, CallMedia(audio=audio, audio_codecs=codecs))
        self._event(call_id, "phone-answered", leg.codec.value)
        await self._carry(call_id, phone, leg, audio, BridgeDirection.TO_PHONE, update.peer)

    def _peer_offer(self, call_id: bytes) -> tuple[BridgeCodec, ...]:
        """The peer's offered codecs, its order: the phone is offered them first."""
        try:
            return peer_codecs(self.calls.remote_sdp(call_id))
        except KeyError:  # the peer already gave up
            return ()

    def _attach(self, call_id: bytes, port: int, leg: PhoneRtpLeg) -> None:
        self.digits[call_id] = []
        while len(self.digits) > MAX_KEPT_DIGIT_CALLS:
            self.digits.popitem(last=False)
        self._digit_queues[call_id] = asyncio.Queue(MAX_QUEUED_DIGITS)
        self._legs[call_id] = leg
        self.ua.digit_handlers[port] = lambda digit: self._digit(call_id, digit)
        self.ua.hold_handlers[port] = lambda held: self._hold(call_id, held)

    async def _carry(
        self,
        call_id: bytes,
        phone: UaCall,
        leg: PhoneRtpLeg,
        audio: PhoneCallAudio,
        direction: BridgeDirection,
        peer: str,
    ) -> None:
        """Media both ways until either side hangs up; then end the other side."""
        if phone.remote_media is not None:
            leg.set_remote(phone.remote_media)
        self._phone_calls[call_id] = phone
        began = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            media = group.create_task(leg.wait_closed())
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
            leg.close()
            signaller.cancel()
            await media
        self._digit_queues.pop(call_id, None)
        self._legs.pop(call_id, None)
        self._phone_calls.pop(call_id, None)
        self._ended.pop(call_id, None)
        codec = audio.codec
        counts = audio.statistics()
        stats = leg.receiver.statistics()
        rtcp = None if leg.rtcp is None else leg.rtcp.statistics()
        summary = BridgedCallSummary(
            direction=direction,
            peer=peer,
            phone_codec=leg.codec.value,
            webrtc_codec="" if codec is None else codec.value,
            mode=_mode(leg.codec, codec),
            seconds=asyncio.get_running_loop().time() - began,
            packets_from_phone=stats.received,
            lost=stats.lost,
            jitter_ms=stats.jitter_ms,
            packets_to_phone=leg.sender.sent,
            frames_from_peer=leg.frames_from_peer,
            passthrough_frames=counts.passthrough_frames,
            transcoded_frames=counts.transcoded_frames,
            peer_passthrough_frames=counts.peer_passthrough,
            direct_frames=counts.direct_frames,
            dropped=tuple((reason.value, count) for reason, count in stats.dropped),
            rtcp_sent=0 if rtcp is None else rtcp.reports_sent,
            rtcp_received=0 if rtcp is None else rtcp.reports_received,
            round_trip_ms=None if rtcp is None else rtcp.round_trip_ms,
            phone_reported_lost=None if rtcp is None else rtcp.phone_cumulative_lost,
            phone_reported_jitter_ms=None if rtcp is None else rtcp.phone_jitter_ms,
        )
        self._count(summary)
        self._event(call_id, "ended", ended_detail(summary), summary)

    def _count(self, summary: BridgedCallSummary) -> None:
        self._calls[(summary.direction, summary.mode)] += 1
        t = self._totals
        t["from_phone"] += summary.packets_from_phone
        t["to_phone"] += summary.packets_to_phone
        t["lost"] += summary.lost
        t["passthrough"] += summary.passthrough_frames
        t["transcoded"] += summary.transcoded_frames

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
        except Exception as error:  # any one call's failure (signalling unreachable, a
            # peer unknown, a SIP timeout) is that call's, never the bridge's
            _LOG.warning("bridged call failed: %s", type(error).__name__)
            self._refused("failed")
            if call_id is not None:
                self._ended.pop(call_id, None)
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
        ours = (self.ua.domain, self.hosted_login, self.own_bridges)
        if not takes_caller(self.callers, caller, *ours):
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
            self._refused("not-found")
            self.ua.refuse(effect, 404, "Not Found", tag)
            return
        transport, leg = await self.ua.open_leg(effect.request.body)
        loop = asyncio.get_running_loop()
        audio = PhoneCallAudio(leg)
        # Every codec the phone offered, in its order, goes first on the P2P leg; the
        # phone is answered (below) with the one the peer took, when it is one of them.
        offered = phone_formats(effect.request.body or b"")
        codecs = p2p_codec_order([f.codec for f in offered], self.calls.config.audio_codecs)
        try:
            call_id = await self.calls.dial(peer, CallMedia(audio=audio, audio_codecs=codecs))
        except BaseException:  # e.g. the peer is unreachable: its leg goes now
            leg.close()
            raise
        self._ended[call_id] = asyncio.Event()
        await self._tell_caller(call_id, caller)
        answered: asyncio.Future[CallState] = loop.create_future()
        self._answered[call_id] = answered
        self._settle(call_id)  # the peer may have answered while dial() was still awaiting
        self._attach(call_id, int(transport.get_extra_info("sockname")[1]), leg)
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
            self._digit_queues.pop(call_id, None)
            self._legs.pop(call_id, None)
            self._ended.pop(call_id, None)
            leg.close()
            self._event(call_id, "peer-refused", str(status))
            self._refused(f"peer-{state.value}")
            return
        taken = next((f for f in offered if f.codec is audio.codec), None)
        if taken is not None and taken.codec is not leg.codec:
            self.ua.settle(int(transport.get_extra_info("sockname")[1]), taken)
            audio.phone_codec_changed()
        phone = self.ua.accept(effect, transport, tag)
        self._event(call_id, "peer-answered", leg.codec.value)
        await self._carry(call_id, phone, leg, audio, BridgeDirection.FROM_PHONE, peer)

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
        self._totals["digits_to_phone"] += 1
        self._event(call_id, "digit-to-phone", digit)

    def _hold(self, call_id: bytes, held: bool) -> None:
        self._event(call_id, "hold" if held else "resume")

    def _digit(self, call_id: bytes, digit: DtmfDigit) -> None:
        self._totals["digits_from_phone"] += 1
        kept = self.digits.get(call_id)
        if kept is not None and len(kept) < MAX_DIGITS_PER_CALL:
            kept.append(digit)
        else:
            self._totals["digits_unkept"] += 1
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


def _key(item: tuple[tuple[BridgeDirection, BridgeMode], int]) -> tuple[str, str]:
    (direction, mode), _ = item
    return direction.value, mode.value

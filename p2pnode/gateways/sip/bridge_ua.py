"""The bridge's SIP side: our own user agent, registered at the gateway as the bridge account.

Why a UA and not a hook in the gateway: the gateway already forks an INVITE
to every registered device of a login (first answer wins, the others get
CANCEL) and anchors the media; the bridge becomes one more device. To ring
``alice`` it INVITEs ``alice@domain`` through the gateway; calls the gateway
routes to the bridge account (logins, numbers and DIDs not hosted here) reach
its ``invites`` queue. Every call's RTP goes to a
:class:`~p2pnode.gateways.sip.bridge_tracks.PhoneRtpLeg` (jitter buffer, RFC
4733 digits, rewriting, 20 ms pacing) instead of the UA's recorder.

Codecs (RFC 3264): the bridge offers PCMU, PCMA, G.722 and opus (RFC 7587:
``opus/48000/2``) and, answering a phone's offer, takes the first of the
phone's codecs it speaks (:meth:`BridgeUserAgent.open_leg`), unless the
controller settles another of them (:meth:`BridgeUserAgent.settle`: the one
the P2P peer took, see :func:`phone_formats`) before the 200 OK. The same
codec on both legs passes through; anything else is decoded and re-encoded
(:mod:`~p2pnode.gateways.sip.bridge_tracks`). A phone offering none of them is
answered with PCMU as before (it may still accept it).

RTCP (RFC 3550) rides the RTP socket when the phone accepts rtcp-mux (RFC
5761: our offer carries ``a=rtcp-mux``; our answer does when the phone's offer
did). Without it RTCP has the leg's own port (RTP + 1 if free), named in our
``a=rtcp`` (RFC 3605); the phone's RTCP address is its ``a=rtcp`` or RTP + 1,
and the gateway's anchor relays both (anchor.py).

Bounds: at most ``MAX_PENDING_INVITES`` phone calls wait for the controller
(the next get 486); ``legs`` and the per-port handlers are forgotten when
their leg's socket closes, so they stay bounded by the calls in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from p2pnode.gateways.sip.bridge_chat import MessageUserAgent
from p2pnode.gateways.sip.bridge_media import BridgeCodec, DtmfDigit, PhoneReceiver, PhoneSender
from p2pnode.gateways.sip.bridge_tracks import PhoneRtpLeg
from p2pnode.gateways.sip.dialog import Dialog
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.sdp import (
    Direction,
    MediaDescription,
    SdpDecodeError,
    SessionDescription,
    parse_sdp,
)
from p2pnode.gateways.sip.transaction import RequestReceived
from p2pnode.gateways.sip.useragent import UaCall, _media, _Rtp

__all__ = [
    "MAX_PENDING_INVITES",
    "PT_DTMF",
    "PT_OPUS",
    "PT_PCMU",
    "BridgeUserAgent",
    "PhoneFormat",
    "choose_phone_format",
    "offer_order",
    "phone_formats",
]

MAX_PENDING_INVITES = 16  # phone calls waiting for the bridge to dial their peer
PT_PCMU = 0
PT_DTMF = 101  # what our UA's offer names telephone-event
PT_OPUS = 111  # our offer's dynamic type for opus (RFC 7587)
# Our offer, best first: G.711 passes through to a G.711 P2P leg untouched.
_OFFER: tuple[tuple[BridgeCodec, int], ...] = (
    (BridgeCodec.PCMU, PT_PCMU),
    (BridgeCodec.PCMA, 8),
    (BridgeCodec.G722, 9),
    (BridgeCodec.OPUS, PT_OPUS),
)
_OPUS_FMTP = "minptime=10;useinbandfec=1"  # RFC 7587 §6.1; we send 20 ms frames


def offer_order(first: Sequence[BridgeCodec]) -> tuple[tuple[BridgeCodec, int], ...]:
    """Our offer with ``first`` (the P2P peer's codecs, its order) ahead of the others.

    Only codecs we offer anyway move; the rest keep our order after them, so a
    phone lacking the peer's codecs still finds one (that call is transcoded).
    """
    ranks = {codec: index for index, codec in enumerate(first)}
    return tuple(sorted(_OFFER, key=lambda item: ranks.get(item[0], len(ranks))))


@dataclass(frozen=True, slots=True)
class PhoneFormat:
    """The phone leg's negotiated audio: codec, its payload type, telephone-event's."""

    codec: BridgeCodec
    payload_type: int
    dtmf_type: int | None
    rtcp_mux: bool = False  # RFC 5761: RTCP on the RTP port
    rtcp_address: tuple[str, int] | None = None  # without mux: its a=rtcp, else RTP + 1


def choose_phone_format(body: bytes) -> PhoneFormat | None:
    """The first codec of the SDP's audio line the bridge speaks (RFC 3264 §6.1 order).

    A codec counts only at its RTP clock (opus 48000, G.722 8000 per RFC 3551
    §4.5.2); telephone-event only at 8000 (the digit extractor's clock).
    None for bad SDP or no common codec.
    """
    formats = phone_formats(body)
    return formats[0] if formats else None


def phone_formats(body: bytes) -> tuple[PhoneFormat, ...]:
    """Every codec of the SDP's audio line the bridge speaks, in the phone's order.

    Why all of them: a phone's INVITE is answered only once the P2P peer
    answered, so the bridge may offer the peer the phone's codecs and answer
    the phone with the one the peer took (no transcoding either way).
    """
    try:
        sdp = parse_sdp(body)
    except SdpDecodeError:
        return ()
    audio = next((m for m in sdp.media if m.media == "audio" and m.port), None)
    if audio is None:
        return ()
    event = audio.telephone_event
    dtmf = event.payload_type if event is not None and event.clock_rate == 8000 else None
    mux = audio.attribute("rtcp-mux") is not None
    rtcp = None if mux else _rtcp_address(sdp, audio)
    out: dict[BridgeCodec, PhoneFormat] = {}
    for offered in audio.codecs():
        codec = BridgeCodec.from_name(offered.name)
        if codec is not None and offered.clock_rate == codec.clock_rate and codec not in out:
            out[codec] = PhoneFormat(codec, offered.payload_type, dtmf, mux, rtcp)
    return tuple(out.values())


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
        self.formats: dict[int, PhoneFormat] = {}  # per RTP port, once offer/answer settled
        # Per RTP port: our offer's order for a call we place (the P2P peer's codecs first).
        self.offers: dict[int, tuple[tuple[BridgeCodec, int], ...]] = {}
        self._next_offer = _OFFER  # taken by the next _open_rtp (see call)

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

    async def open_leg(
        self, offer: bytes | None = None
    ) -> tuple[asyncio.DatagramTransport, PhoneRtpLeg]:
        """A leg for a phone's call; ``offer`` (its INVITE's SDP) picks the leg's codec."""
        transport, _ = await self._open_rtp()
        port = int(transport.get_extra_info("sockname")[1])
        leg = self.legs[port]
        chosen = choose_phone_format(offer) if offer else None
        if chosen is not None:
            self.settle(port, chosen)
        return transport, leg

    def settle(self, port: int, chosen: PhoneFormat) -> None:
        """The phone leg at ``port`` uses ``chosen`` (our answer to the phone names it).

        Before the phone's media flows: :meth:`open_leg` settles the phone's
        first codec; the controller may settle another of the phone's
        (:func:`phone_formats`) before :meth:`accept` answers.
        """
        self.formats[port] = chosen
        leg = self.legs.get(port)
        if leg is not None:
            leg.set_codec(chosen.codec, chosen.payload_type, chosen.dtmf_type)
            if chosen.rtcp_mux or chosen.rtcp_address is not None:
                cname = f"{self.login}@{self.domain}"
                leg.enable_rtcp(
                    cname, self._spread, None if chosen.rtcp_mux else chosen.rtcp_address
                )

    async def call(self, target: str, first: Sequence[BridgeCodec] = ()) -> UaCall:
        """INVITE ``target`` offering ``first`` (the P2P peer's codecs) ahead of ours.

        The order is handed to the call's RTP port: the base UA opens it
        (:meth:`_open_rtp`, which takes ``_next_offer`` before its first await)
        and then builds the offer from that port.
        """
        self._next_offer = offer_order(first)
        try:
            return await super().call(target)
        finally:
            self._next_offer = _OFFER  # taken already, unless the call failed before its port

    def _spread(self) -> float:
        """RFC 3550 §6.2: each report interval times a random factor in [0.5, 1.5)."""
        return 0.5 + int.from_bytes(self.randbytes(2), "big") / 65536

    def _sdp(self, port: int) -> bytes:
        """Our offer (every codec we speak), or the answer naming the one settled."""
        chosen = self.formats.get(port)
        offered = self.offers.get(port, _OFFER)
        offers = offered if chosen is None else ((chosen.codec, chosen.payload_type),)
        dtmf = PT_DTMF if chosen is None else chosen.dtmf_type
        types = [str(pt) for _, pt in offers] + ([] if dtmf is None else [str(dtmf)])
        lines = [
            "v=0",
            f"o=- {int(self.token()[:8], 16)} 1 IN IP4 {self.host}",
            "s=-",
            f"c=IN IP4 {self.host}",
            "t=0 0",
            f"m=audio {port} RTP/AVP {' '.join(types)}",
        ]
        for codec, pt in offers:
            channels = f"/{codec.channels}" if codec.channels > 1 else ""
            lines.append(f"a=rtpmap:{pt} {codec.value}/{codec.clock_rate}{channels}")
            if codec is BridgeCodec.OPUS:
                lines.append(f"a=fmtp:{pt} {_OPUS_FMTP}")
        if dtmf is not None:
            lines += [f"a=rtpmap:{dtmf} telephone-event/8000", f"a=fmtp:{dtmf} 0-15"]
        if chosen is None or chosen.rtcp_mux:
            lines.append("a=rtcp-mux")
        leg = self.legs.get(port)
        if (chosen is None or not chosen.rtcp_mux) and leg is not None and leg.rtcp_port:
            lines.append(f"a=rtcp:{leg.rtcp_port.local_port}")  # RFC 3605 (RFC 5761 §5.1.3)
        lines += ["a=ptime:20", "a=sendrecv", ""]
        return "\r\n".join(lines).encode()

    async def _authenticated(
        self,
        build: Callable[[int, tuple[Header, ...]], SipRequest],
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> tuple[SipRequest, SipResponse]:
        """The base UA's requests; a 2xx to our INVITE settles that call's codec.

        Our offer's m= port names the leg; the phone's answer picks the codec.
        """
        request, response = await super()._authenticated(build, on_provisional)
        if request.method == "INVITE" and 200 <= response.status < 300 and response.body:
            chosen = choose_phone_format(response.body)
            port = _audio_port(request.body)
            if chosen is not None and port is not None and port in self.legs:
                self.settle(port, chosen)
        return request, response

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
        """Legs of ended calls go; what the UA holds stays bounded by the calls in progress.

        Calls we hung up go too: the base UA forgets a call on the phone's BYE,
        not on ours, and the bridge sends BYE whenever the P2P side hangs up.
        """
        for port, leg in list(self.legs.items()):
            if leg.transport is None or leg.transport.is_closing():
                del self.legs[port]
                self.formats.pop(port, None)
                self.offers.pop(port, None)
                self.digit_handlers.pop(port, None)
                self.hold_handlers.pop(port, None)
        for call_id, call in list(self._calls.items()):
            if call.ended.is_set():
                del self._calls[call_id]

    async def _open_rtp(self) -> tuple[asyncio.DatagramTransport, _Rtp]:
        offer, self._next_offer = self._next_offer, _OFFER  # before any await: this call's
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
        self.offers[port] = offer

        def digit(found: DtmfDigit) -> None:
            handler = self.digit_handlers.get(port)
            if handler is not None:
                handler(found)

        leg.on_digit = digit
        transport = leg.transport
        assert transport is not None
        return transport, _Rtp()  # the recorder protocol stays detached


def _rtcp_address(sdp: SessionDescription, audio: MediaDescription) -> tuple[str, int] | None:
    """RFC 3605 ``a=rtcp`` (address defaults to the section's), else RTP port + 1."""
    host = sdp.address(audio)
    stated = audio.rtcp_address()
    if stated is not None:
        host = stated[0] or host
    if host is None:
        return None
    return host, stated[1] if stated is not None else min(audio.port + 1, 65535)


def _audio_port(body: bytes) -> int | None:
    try:
        sdp = parse_sdp(body)
    except SdpDecodeError:
        return None
    return next((m.port for m in sdp.media if m.media == "audio"), None)

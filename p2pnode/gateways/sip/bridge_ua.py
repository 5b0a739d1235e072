"""The bridge's SIP side: our own user agent, registered at the gateway as the bridge account.

Why a UA and not a hook in the gateway: the gateway already forks an INVITE
to every registered device of a login (first answer wins, the others get
CANCEL) and anchors the media; the bridge becomes one more device. To ring
``alice`` it INVITEs ``alice@domain`` through the gateway; calls the gateway
routes to the bridge account (logins, numbers and DIDs not hosted here) reach
its ``invites`` queue. Every call's RTP goes to a
:class:`~p2pnode.gateways.sip.bridge_tracks.PhoneRtpLeg` (jitter buffer, RFC
4733 digits, rewriting, 20 ms pacing) instead of the UA's recorder.

Bounds: at most ``MAX_PENDING_INVITES`` phone calls wait for the controller
(the next get 486); ``legs`` and the per-port handlers are forgotten when
their leg's socket closes, so they stay bounded by the calls in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from p2pnode.gateways.sip.bridge_chat import MessageUserAgent
from p2pnode.gateways.sip.bridge_media import BridgeCodec, DtmfDigit, PhoneReceiver, PhoneSender
from p2pnode.gateways.sip.bridge_tracks import PhoneRtpLeg
from p2pnode.gateways.sip.dialog import Dialog
from p2pnode.gateways.sip.message import build_response
from p2pnode.gateways.sip.sdp import Direction, SdpDecodeError, parse_sdp
from p2pnode.gateways.sip.transaction import RequestReceived
from p2pnode.gateways.sip.useragent import UaCall, _media, _Rtp

__all__ = ["MAX_PENDING_INVITES", "PT_DTMF", "PT_PCMU", "BridgeUserAgent"]

MAX_PENDING_INVITES = 16  # phone calls waiting for the bridge to dial their peer
PT_PCMU = 0
PT_DTMF = 101  # what our UA's offer names telephone-event


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
        """Legs of ended calls go; what the UA holds stays bounded by the calls in progress.

        Calls we hung up go too: the base UA forgets a call on the phone's BYE,
        not on ours, and the bridge sends BYE whenever the P2P side hangs up.
        """
        for port, leg in list(self.legs.items()):
            if leg.transport is None or leg.transport.is_closing():
                del self.legs[port]
                self.digit_handlers.pop(port, None)
                self.hold_handlers.pop(port, None)
        for call_id, call in list(self._calls.items()):
            if call.ended.is_set():
                del self._calls[call_id]

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

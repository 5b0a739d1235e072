"""The gateway's call logic: a back-to-back user agent with media anchored on the relay.

Why a B2BUA and not a proxy: the gateway must rewrite SDP (media through its
relay, so NATed phones hear each other), hide one side's addresses from the
other, count calls per account and end both legs when one side goes away. A
proxy could do none of that without becoming one.

A call has leg A (the caller's INVITE, a server transaction) and one leg B per
registered contact of the callee (forking: every contact rings, the first 2xx
wins, the others get CANCEL, a late 2xx is ACKed and BYEd). In-dialog requests
(re-INVITE for hold/resume, UPDATE and session-timer refreshes, INFO
dtmf-relay, MESSAGE) are forwarded to the other leg and the answer brought
back, SDP anchored both ways. BYE is answered at once and sent to the other
leg. The ACK of leg B waits for leg A's ACK only when A's INVITE had no offer
(B's 2xx then carries the offer, A's ACK the answer).

Sans-IO: :meth:`B2bua.handle` takes the transaction layer's events and ``now``
and returns :class:`Action` values; the relay's ports come from an injected
``open_media`` and randomness from ``randbytes``. Routing, authentication and
policy are :mod:`routing`'s; this module holds the calls, and one call's
record (legs, state table) is :mod:`b2bua_call`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from p2pnode.gateways.sip.actions import (
    Action,
    CallEnded,
    Contact,
    Respond,
    SendDirect,
    StartRequest,
    Target,
)
from p2pnode.gateways.sip.anchor import MediaPorts, anchor_sdp
from p2pnode.gateways.sip.b2bua_call import (
    SESSION_GRACE,
    Call,
    CallEvent,
    CallState,
    Leg,
    Pending,
    ack_cseq,
    failure_rank,
    record_routes,
    session_interval,
    source_of,
)
from p2pnode.gateways.sip.dialog import Dialog, DialogError
from p2pnode.gateways.sip.headers import NameAddress, SipUri
from p2pnode.gateways.sip.media import Address, Side
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.sdp import SdpDecodeError
from p2pnode.gateways.sip.transaction import (
    MAGIC_COOKIE,
    ClientKey,
    ServerKey,
    client_key,
)

__all__ = [
    "MAX_CALLS",
    "RING_TIMEOUT",
    "SESSION_GRACE",
    "Action",
    "B2bua",
    "CallEnded",
    "CallState",
    "Contact",
    "Respond",
    "SendDirect",
    "StartRequest",
    "Target",
]

MAX_CALLS = 1024  # calls held at once; beyond, 503
RING_TIMEOUT = 180.0  # RFC 3261 §16.6 Timer C: a call ringing longer is cancelled (408)
_FORWARDED_HEADERS = ("Content-Type", "Session-Expires", "Min-SE", "Event", "Info-Package")
_ANSWER_HEADERS = ("Content-Type", "Session-Expires", "Require")


class B2bua:
    """Every call of the gateway, bounded by ``max_calls``."""

    def __init__(
        self,
        *,
        sip_host: str,
        sip_port: int,
        media_host: str,
        open_media: Callable[[], MediaPorts],
        randbytes: Callable[[int], bytes],
        max_calls: int = MAX_CALLS,
        clock: Callable[[], float] = lambda: 0.0,
        sent_by: Callable[[Address, bool], str] | None = None,
    ) -> None:
        """``sent_by``: a Via's sent-protocol and sent-by for a request to a destination
        (``SIP/2.0/TLS host:5061`` on a TLS connection, RFC 3261 §18 and §20.42: the
        transport's answer); without it, TCP or UDP at ``sip_host:sip_port``."""
        self._clock = clock
        self._sent_by = sent_by
        self.sip_host = sip_host
        self.sip_port = sip_port
        self.media_host = media_host
        self._open_media = open_media
        self._randbytes = randbytes
        self.max_calls = max_calls
        self._calls: dict[str, Call] = {}
        self._by_a: dict[tuple[str, str], str] = {}  # (Call-ID, caller's From tag) -> ref
        self._by_b: dict[str, str] = {}  # B-leg Call-ID -> ref
        self._clients: dict[ClientKey, tuple[str, Leg]] = {}
        self._pending: dict[ClientKey, Pending] = {}
        self.calls_started = 0
        self.calls_answered = 0

    # -- helpers ------------------------------------------------------------------------
    def _token(self, size: int = 8) -> str:
        return self._randbytes(size).hex()

    def _via(self, to: Leg | Contact) -> str:
        """The Via (without branch) of a request to a leg or a device."""
        if self._sent_by is not None:
            return f"{self._sent_by(to.destination, to.reliable)};rport"
        return f"SIP/2.0/{'TCP' if to.reliable else 'UDP'} {self.sip_host}:{self.sip_port};rport"

    def contact(self) -> str:
        return f"<sip:gw@{self.sip_host}:{self.sip_port}>"

    def active_calls(self) -> int:
        return len(self._calls)

    def _call_for(self, request: SipRequest) -> tuple[Call, Side] | None:
        ref = self._by_b.get(request.call_id)
        if ref is not None:
            return self._calls[ref], Side.B
        ref = self._by_a.get((request.call_id, request.from_.tag or ""))
        if ref is not None:
            return self._calls[ref], Side.A
        return None

    def _anchor(self, call: Call, body: bytes, sender: Side, source: Address) -> bytes:
        return anchor_sdp(
            body, sender=sender, sender_source=source, media=call.media, media_host=self.media_host
        )

    # -- new calls ----------------------------------------------------------------------
    def invite(
        self, key: ServerKey, request: SipRequest, source: Address, reliable: bool, target: Target
    ) -> list[Action]:
        """Start a call from ``request`` (routing decided it goes to ``target``)."""

        def refuse(status: int, reason: str) -> list[Action]:
            return [Respond(key, build_response(request, status, reason, to_tag=self._token()))]

        if len(self._calls) >= self.max_calls:
            return refuse(503, "Service Unavailable")
        if not target.contacts:
            return refuse(480, "Temporarily Unavailable")
        offer = request.body
        media = self._open_media()
        ref = self._token()
        call = Call(
            ref=ref,
            state=CallState.RINGING,
            a=Leg(Side.A, source, reliable),
            a_key=key,
            a_invite=request,
            a_tag=self._token(),
            b_call_id=self._token(12) + "@" + self.sip_host,
            b_tag=self._token(),
            accounts=target.accounts,
            media=media,
            b_ack_waits_for_a=not offer,
            deadline=self._clock() + RING_TIMEOUT,
        )
        try:
            body = self._anchor(call, offer, Side.A, source) if offer else b""
        except SdpDecodeError:
            media.close()
            return refuse(488, "Not Acceptable Here")
        self._calls[ref] = call
        self._by_a[(request.call_id, request.from_.tag or "")] = ref
        self._by_b[call.b_call_id] = ref
        self.calls_started += 1
        actions: list[Action] = []
        forwards = max(0, (request.max_forwards or 70) - 1)
        extra = [h for h in request.headers if h.name in ("Session-Expires", "Min-SE")]
        if offer:
            extra.append(Header("Content-Type", "application/sdp"))
        caller = target.caller or request.from_
        for binding in target.contacts:
            branch = self._token()
            headers = (
                Header("Via", f"{self._via(binding)};branch={MAGIC_COOKIE}{branch}"),
                Header("Max-Forwards", str(forwards)),
                Header(
                    "From",
                    str(NameAddress(caller.uri, caller.display_name, ())) + f";tag={call.b_tag}",
                ),
                Header("To", f"<{target.aor}>"),
                Header("Call-ID", call.b_call_id),
                Header("CSeq", "1 INVITE"),
                Header("Contact", self.contact()),
                Header("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, MESSAGE"),
                *extra,
                Header("Content-Length", str(len(body))),
            )
            uri = binding.uri
            if target.request_uri_user is not None and isinstance(uri, SipUri):
                uri = replace(uri, user=target.request_uri_user)
            invite = SipRequest.build("INVITE", uri, headers, body)
            leg = Leg(Side.B, binding.destination, binding.reliable, invite=invite)
            leg.key = client_key(invite)
            assert leg.key is not None
            self._clients[leg.key] = (ref, leg)
            call.branches.append(leg)
            actions.append(StartRequest(invite, binding.destination, binding.reliable))
        return actions

    def cancel(self, key: ServerKey, request: SipRequest) -> list[Action]:
        """CANCEL from the caller: 200 to it, 487 to its INVITE, CANCEL to every branch."""
        found = self._call_for(request)
        if found is None or found[1] is not Side.A:
            return [Respond(key, build_response(request, 481, "Call/Transaction Does Not Exist"))]
        call = found[0]
        actions: list[Action] = [Respond(key, build_response(request, 200, "OK"))]
        if call.state is not CallState.RINGING:
            return actions  # too late: the 2xx crossed the CANCEL; A will BYE
        call.move(CallEvent.CANCEL)
        terminated = build_response(call.a_invite, 487, "Request Terminated", to_tag=call.a_tag)
        actions.append(Respond(call.a_key, terminated))
        actions += self._cancel_branches(call, None)
        return actions + self._end(call)

    def _cancel_branches(self, call: Call, keep: Leg | None) -> list[Action]:
        actions: list[Action] = []
        for leg in call.branches:
            if leg is keep or leg.final is not None or leg.invite is None:
                continue
            invite = leg.invite
            kept = [h for h in invite.headers if h.name in ("Via", "From", "To", "Call-ID")]
            headers = (
                *kept,
                Header("CSeq", f"{invite.cseq.number} CANCEL"),
                Header("Max-Forwards", "70"),
                Header("Content-Length", "0"),
            )
            cancel = SipRequest.build("CANCEL", invite.uri, headers, b"")
            actions.append(StartRequest(cancel, leg.destination, leg.reliable))
        return actions

    # -- responses on leg B ---------------------------------------------------------------
    def response(self, key: ClientKey, response: SipResponse) -> list[Action]:
        pending = self._pending.pop(key, None) if response.status >= 200 else None
        if pending is not None:
            return self._forwarded_answer(pending, response)
        owner = self._clients.get(key)
        if owner is None or key.method != "INVITE":
            return []
        ref, leg = owner
        call = self._calls.get(ref)
        if call is None:
            return self._late_answer(leg, response) if 200 <= response.status < 300 else []
        if response.status < 200:
            return self._provisional(call, leg, response)
        if response.status < 300:
            return self._answer(call, leg, response)
        leg.final = response.status
        del self._clients[key]
        if call.state is not CallState.RINGING or any(b.final is None for b in call.branches):
            return []
        call.move(CallEvent.FAIL)
        best = min((b.final or 500 for b in call.branches), key=failure_rank)
        reason = response.reason if best == response.status else "Call Failed"
        failure = build_response(call.a_invite, best, reason, to_tag=call.a_tag)
        return [Respond(call.a_key, failure), *self._end(call)]

    def _provisional(self, call: Call, leg: Leg, response: SipResponse) -> list[Action]:
        if response.status == 100 or call.state is not CallState.RINGING:
            return []
        body = b""
        extra: list[tuple[str, str]] = [("Contact", self.contact()), *record_routes(call)]
        if response.body:
            try:
                body = self._anchor(call, response.body, Side.B, leg.destination)
            except SdpDecodeError:
                return []
            extra.append(("Content-Type", "application/sdp"))
        relayed = build_response(
            call.a_invite, response.status, response.reason, *extra, to_tag=call.a_tag, body=body
        )
        return [Respond(call.a_key, relayed)]

    def _answer(self, call: Call, leg: Leg, response: SipResponse) -> list[Action]:
        if call.winner is not None:
            if leg is call.winner:  # a retransmitted 2xx: our ACK or A's 2xx got lost
                if leg.ack is not None:
                    return [SendDirect(leg.ack, leg.destination, leg.reliable)]
                return [] if call.a_final is None else [Respond(call.a_key, call.a_final)]
            return self._late_answer(leg, response)
        if call.state is not CallState.RINGING:
            return self._late_answer(leg, response)
        assert leg.invite is not None
        try:
            leg.dialog = Dialog.from_uac(leg.invite, response)
            body = (
                self._anchor(call, response.body, Side.B, leg.destination) if response.body else b""
            )
        except (DialogError, SdpDecodeError):
            return self._late_answer(leg, response)
        leg.final = response.status
        call.winner = leg
        call.move(CallEvent.ANSWER)
        call.deadline = self._clock() + session_interval(response)
        self.calls_answered += 1
        call.a.dialog = Dialog.from_uas(call.a_invite, call.a_tag, confirmed=True)
        extra = [("Contact", self.contact()), *record_routes(call)]
        extra += [(h.name, h.value) for h in response.headers if h.name in _ANSWER_HEADERS]
        if body and not any(name == "Content-Type" for name, _ in extra):
            extra.append(("Content-Type", "application/sdp"))
        call.a_final = build_response(
            call.a_invite, 200, "OK", *extra, to_tag=call.a_tag, body=body
        )
        actions: list[Action] = [Respond(call.a_key, call.a_final)]
        if not call.b_ack_waits_for_a:
            actions += self._ack(leg, leg.invite.cseq.number, b"")
        return actions + self._cancel_branches(call, leg)

    def _ack(self, leg: Leg, cseq: int, body: bytes) -> list[Action]:
        assert leg.dialog is not None
        extra = (Header("Content-Type", "application/sdp"),) if body else ()
        _, ack = leg.dialog.create_request(
            "ACK",
            via=self._via(leg),
            branch_id=self._token(),
            cseq=cseq,
            extra=extra,
            body=body,
        )
        leg.ack = ack
        return [SendDirect(ack, leg.destination, leg.reliable)]

    def _late_answer(self, leg: Leg, response: SipResponse) -> list[Action]:
        """A 2xx from a branch that lost (or after the call ended): ACK it, then BYE it."""
        if leg.invite is None:
            return []
        try:
            dialog = Dialog.from_uac(leg.invite, response)
        except DialogError:
            return []
        leg.dialog = dialog
        actions = self._ack(leg, leg.invite.cseq.number, b"")
        _, bye = dialog.create_request("BYE", via=self._via(leg), branch_id=self._token())
        return [*actions, StartRequest(bye, leg.destination, leg.reliable)]

    def timed_out(self, key: ClientKey) -> list[Action]:
        """Timer B/F on one of our requests: a 408 from that side."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            call = self._calls.get(pending.call_ref)
            if call is None:
                return []
            return [Respond(pending.key, build_response(pending.request, 408, "Request Timeout"))]
        owner = self._clients.get(key)
        if owner is None or key.method != "INVITE":
            return []
        invite = owner[1].invite
        assert invite is not None  # every tracked branch holds its INVITE
        return self.response(key, build_response(invite, 408, "Request Timeout"))

    # -- ACK and in-dialog requests ---------------------------------------------------------
    def ack(self, request: SipRequest) -> list[Action]:
        """An ACK for a 2xx (no transaction): confirms the call or a re-INVITE."""
        found = self._call_for(request)
        if found is None:
            return []
        call, side = found
        other = call.leg(side.other)
        if other is None or other.dialog is None:
            return []
        body = b""
        if request.body:
            try:
                body = self._anchor(call, request.body, side, source_of(call, side))
            except SdpDecodeError:
                body = b""
        if side is Side.A and call.state is CallState.ANSWERED:
            call.move(CallEvent.ACK)
            if call.b_ack_waits_for_a and other.invite is not None:
                call.b_ack_waits_for_a = False
                return self._ack(other, other.invite.cseq.number, body)
            return []
        cseq = call.acks_owed.pop(side, None)
        if cseq is None or request.cseq.number != ack_cseq(call, side, cseq):
            return []
        return self._ack(other, cseq, body)

    def in_dialog(self, key: ServerKey, request: SipRequest) -> list[Action]:
        """A request with a To tag: BYE ends both legs, anything else is forwarded."""

        def refuse(status: int, reason: str) -> list[Action]:
            return [Respond(key, build_response(request, status, reason))]

        found = self._call_for(request)
        if found is None:
            return refuse(481, "Call/Transaction Does Not Exist")
        call, side = found
        leg = call.leg(side)
        other = call.leg(side.other)
        own_tag = call.a_tag if side is Side.A else call.b_tag
        if leg is None or leg.dialog is None or request.to.tag != own_tag:
            return refuse(481, "Call/Transaction Does Not Exist")
        leg.dialog, status = leg.dialog.on_request(request)
        if status is not None:
            return refuse(status, "Server Internal Error")
        if request.method == "BYE":
            actions: list[Action] = [Respond(key, build_response(request, 200, "OK"))]
            if other is not None and other.dialog is not None:
                other.dialog, bye = other.dialog.create_request(
                    "BYE", via=self._via(other), branch_id=self._token()
                )
                actions.append(StartRequest(bye, other.destination, other.reliable))
            if call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                call.move(CallEvent.BYE)
            return actions + self._end(call)
        if other is None or other.dialog is None:
            return refuse(481, "Call/Transaction Does Not Exist")
        body = request.body
        if body and request.header("Content-Type") == "application/sdp":
            try:
                body = self._anchor(call, body, side, source_of(call, side))
            except SdpDecodeError:
                return refuse(488, "Not Acceptable Here")
        extra = [h for h in request.headers if h.name in _FORWARDED_HEADERS]
        if request.method in ("INVITE", "UPDATE"):
            extra.append(Header("Contact", self.contact()))
        other.dialog, forwarded = other.dialog.create_request(
            request.method,
            via=self._via(other),
            branch_id=self._token(),
            extra=tuple(extra),
            body=body,
        )
        forward_key = client_key(forwarded)
        assert forward_key is not None
        self._pending[forward_key] = Pending(call.ref, side, key, request)
        return [StartRequest(forwarded, other.destination, other.reliable)]

    def _forwarded_answer(self, pending: Pending, response: SipResponse) -> list[Action]:
        call = self._calls.get(pending.call_ref)
        request = pending.request
        if call is None:
            return [Respond(pending.key, build_response(request, 481, "Call Ended"))]
        body = response.body
        extra = [(h.name, h.value) for h in response.headers if h.name in _ANSWER_HEADERS]
        if body and response.header("Content-Type") == "application/sdp":
            other = call.leg(pending.side.other)
            source = other.destination if other is not None else ("0.0.0.0", 0)
            try:
                body = self._anchor(call, body, pending.side.other, source)
            except SdpDecodeError:
                body = b""
        if request.method in ("INVITE", "UPDATE") and response.status < 300:
            extra.append(("Contact", self.contact()))
        if request.method == "INVITE" and 200 <= response.status < 300:
            # The forwarded re-INVITE's 2xx is ACKed when the requester ACKs ours.
            leg = call.leg(pending.side.other)
            if leg is not None and leg.dialog is not None and leg.dialog.local_seq is not None:
                call.acks_owed[pending.side] = leg.dialog.local_seq
        if request.method in ("INVITE", "UPDATE") and 200 <= response.status < 300:
            call.deadline = self._clock() + session_interval(response)  # a refresh
        answer = build_response(request, response.status, response.reason, *extra, body=body)
        return [Respond(pending.key, answer)]

    # -- time -------------------------------------------------------------------------------
    def advance(self, now: float) -> list[Action]:
        """Timer C for ringing calls, RFC 4028 expiry for answered ones."""
        actions: list[Action] = []
        for call in [c for c in self._calls.values() if c.deadline <= now]:
            if call.state is CallState.RINGING:
                call.move(CallEvent.CANCEL)
                timeout = build_response(call.a_invite, 408, "Request Timeout", to_tag=call.a_tag)
                actions += [Respond(call.a_key, timeout), *self._cancel_branches(call, None)]
            else:
                for side in Side:
                    leg = call.leg(side)
                    if leg is not None and leg.dialog is not None:
                        leg.dialog, bye = leg.dialog.create_request(
                            "BYE", via=self._via(leg), branch_id=self._token()
                        )
                        actions.append(StartRequest(bye, leg.destination, leg.reliable))
            actions += self._end(call)
        return actions

    # -- the end ----------------------------------------------------------------------------
    def _end(self, call: Call) -> list[Action]:
        call.state = CallState.ENDED
        call.media.close()
        self._calls.pop(call.ref, None)
        self._by_a.pop((call.a_invite.call_id, call.a_invite.from_.tag or ""), None)
        self._by_b.pop(call.b_call_id, None)
        for leg in call.branches:
            if leg.key is not None and leg is not call.winner and leg.final is not None:
                self._clients.pop(leg.key, None)
        return [CallEnded(call.ref, call.accounts, call.winner is not None)]

    def forget(self, key: ClientKey) -> None:
        """A client transaction ended: stop tracking it unless its call still needs it."""
        owner = self._clients.get(key)
        if owner is not None and owner[0] not in self._calls:
            del self._clients[key]

"""The B2BUA core in virtual time: forking, first answer wins, CANCEL, hold, INFO, BYE.

No sockets: requests and responses are parsed from text, the B2BUA's actions
are inspected, and a port pair is a plain object with the real LatchCore.
"""

from __future__ import annotations

import random

from p2pnode.gateways.sip.b2bua import (
    RING_TIMEOUT,
    SESSION_GRACE,
    B2bua,
    CallEnded,
    Contact,
    Respond,
    SendDirect,
    StartRequest,
    Target,
)
from p2pnode.gateways.sip.headers import SipUri, parse_uri
from p2pnode.gateways.sip.media import LatchCore, Side
from p2pnode.gateways.sip.message import SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.parser import parse_datagram
from p2pnode.gateways.sip.sdp import Direction, parse_sdp
from p2pnode.gateways.sip.transaction import ClientKey, client_key, server_key

CALLER = ("198.51.100.10", 5060)
PHONE_1 = ("198.51.100.21", 5060)
PHONE_2 = ("198.51.100.22", 5060)


class Ports:
    def __init__(self) -> None:
        self.core = LatchCore()
        self.closed = False
        self.expected: dict[Side, tuple[str, int]] = {}

    def port(self, side: Side) -> int:
        return 40000 if side is Side.A else 40002

    def expect(self, side: Side, address: tuple[str, int]) -> None:
        self.expected[side] = address
        self.core.expect(side, address)

    def rtcp_port(self, side: Side) -> int | None:
        return None  # RTCP anchoring is tested in test_anchor_rtcp.py

    def expect_rtcp(self, side: Side, address: tuple[str, int]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def sdp(host: str, port: int, direction: str = "sendrecv") -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )


def request(text: str, body: str = "") -> SipRequest:
    head = text.strip().replace("\n", "\r\n")
    data = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    message = parse_datagram(data)
    assert isinstance(message, SipRequest)
    return message


def caller_invite(body: str) -> SipRequest:
    return request(
        f"""INVITE sip:bob@gw.test SIP/2.0
Via: SIP/2.0/UDP {CALLER[0]}:5060;branch=z9hG4bKcaller1
From: <sip:carol@other.example>;tag=c1
To: <sip:bob@gw.test>
Call-ID: call-a
CSeq: 10 INVITE
Contact: <sip:carol@{CALLER[0]}>
Max-Forwards: 70
Content-Type: application/sdp""",
        body,
    )


def answer(invite: SipRequest, status: int, tag: str, host: str, body: str = "") -> SipResponse:
    extra = [("Contact", f"<sip:bob@{host}>")]
    if body:
        extra.append(("Content-Type", "application/sdp"))
    return build_response(invite, status, "X", *extra, to_tag=tag, body=body.encode())


def key(request: SipRequest) -> ClientKey:
    found = client_key(request)
    assert found is not None
    return found


def setup() -> tuple[B2bua, Ports]:
    ports = Ports()
    b2bua = B2bua(
        sip_host="192.0.2.1",
        sip_port=5060,
        media_host="192.0.2.1",
        open_media=lambda: ports,
        randbytes=random.Random(5).randbytes,
    )
    return b2bua, ports


def started(b2bua: B2bua) -> tuple[SipRequest, list[StartRequest]]:
    invite = caller_invite(sdp("192.168.1.10", 7000))  # a private SDP address behind NAT
    target = Target(
        SipUri("sip", "bob", None, "gw.test", None),
        (
            Contact(parse_uri("sip:bob@10.0.0.21"), PHONE_1, False),
            Contact(parse_uri("sip:bob@10.0.0.22"), PHONE_2, False),
        ),
        ("bob",),
    )
    actions = b2bua.invite(server_key(invite), invite, CALLER, False, target)
    starts = [a for a in actions if isinstance(a, StartRequest)]
    return invite, starts


def test_forks_to_every_contact_with_sdp_anchored_on_the_relay() -> None:
    b2bua, ports = setup()
    _, starts = started(b2bua)
    assert [s.destination for s in starts] == [PHONE_1, PHONE_2]
    offer = parse_sdp(starts[0].request.body)
    assert offer.address(offer.media[0]) == "192.0.2.1"
    assert offer.media[0].port == 40002  # B sends to the port facing it
    assert offer.media[0].telephone_event is not None  # RFC 4733 passes through
    # The caller's private SDP address was replaced by its SIP source (NAT fix).
    assert ports.expected[Side.A] == (CALLER[0], 7000)
    assert starts[0].request.max_forwards == 69


def test_first_answer_wins_the_others_are_cancelled_and_a_late_answer_is_hung_up() -> None:
    b2bua, ports = setup()
    _invite, starts = started(b2bua)
    one, two = (s.request for s in starts)
    ringing = b2bua.response(key(one), answer(one, 180, "p1", "10.0.0.21"))
    assert isinstance(ringing[0], Respond) and ringing[0].response.status == 180
    ok = b2bua.response(key(two), answer(two, 200, "p2", "10.0.0.22", sdp("10.0.0.22", 9000)))
    final = next(a for a in ok if isinstance(a, Respond)).response
    assert final.status == 200 and final.to.tag is not None
    assert parse_sdp(final.body).media[0].port == 40000
    assert ports.expected[Side.B] == (PHONE_2[0], 9000)
    assert any(isinstance(a, SendDirect) and a.message.method == "ACK" for a in ok)
    cancels = [a for a in ok if isinstance(a, StartRequest)]
    assert [(c.request.method, c.destination) for c in cancels] == [("CANCEL", PHONE_1)]
    assert cancels[0].request.top_via.branch == one.top_via.branch
    late = b2bua.response(key(one), answer(one, 200, "p1", "10.0.0.21", sdp("10.0.0.21", 9)))
    methods = [a.message.method if isinstance(a, SendDirect) else a.request.method for a in late
               if isinstance(a, SendDirect | StartRequest)]  # fmt: skip
    assert methods == ["ACK", "BYE"]
    assert b2bua.active_calls() == 1 and not ports.closed


def test_cancel_from_the_caller_ends_every_branch_with_487() -> None:
    b2bua, ports = setup()
    _invite, _starts = started(b2bua)
    cancel = request(
        f"""CANCEL sip:bob@gw.test SIP/2.0
Via: SIP/2.0/UDP {CALLER[0]}:5060;branch=z9hG4bKcaller1
From: <sip:carol@other.example>;tag=c1
To: <sip:bob@gw.test>
Call-ID: call-a
CSeq: 10 CANCEL
Max-Forwards: 70"""
    )
    actions = b2bua.cancel(server_key(cancel), cancel)
    statuses = [a.response.status for a in actions if isinstance(a, Respond)]
    assert statuses == [200, 487]
    assert [a.request.method for a in actions if isinstance(a, StartRequest)] == ["CANCEL"] * 2
    assert any(isinstance(a, CallEnded) and not a.answered for a in actions)
    assert ports.closed and b2bua.active_calls() == 0


def test_all_branches_failing_gives_the_best_failure() -> None:
    b2bua, _ = setup()
    _invite, starts = started(b2bua)
    one, two = (s.request for s in starts)
    assert b2bua.response(key(one), answer(one, 503, "p1", "x")) == []
    actions = b2bua.response(key(two), answer(two, 486, "p2", "x"))
    assert [a.response.status for a in actions if isinstance(a, Respond)] == [486]


def confirmed() -> tuple[B2bua, Ports, SipRequest, SipResponse, SipRequest]:
    b2bua, ports = setup()
    invite, starts = started(b2bua)
    two = starts[1].request
    ok = b2bua.response(key(two), answer(two, 200, "p2", "10.0.0.22", sdp("10.0.0.22", 9000)))
    final = next(a for a in ok if isinstance(a, Respond)).response
    ack = request(
        f"""ACK sip:gw@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/UDP {CALLER[0]}:5060;branch=z9hG4bKack1
From: <sip:carol@other.example>;tag=c1
To: <sip:bob@gw.test>;tag={final.to.tag}
Call-ID: call-a
CSeq: 10 ACK
Max-Forwards: 70"""
    )
    assert b2bua.ack(ack) == []
    return b2bua, ports, invite, final, two


def test_hold_reinvite_is_forwarded_with_its_direction_and_acked_through() -> None:
    b2bua, _ports, _, final, _ = confirmed()
    hold = request(
        f"""INVITE sip:gw@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/UDP {CALLER[0]}:5060;branch=z9hG4bKhold1
From: <sip:carol@other.example>;tag=c1
To: <sip:bob@gw.test>;tag={final.to.tag}
Call-ID: call-a
CSeq: 11 INVITE
Contact: <sip:carol@{CALLER[0]}>
Max-Forwards: 70
Content-Type: application/sdp""",
        sdp("192.168.1.10", 7000, "sendonly"),
    )
    (forward,) = b2bua.in_dialog(server_key(hold), hold)
    assert isinstance(forward, StartRequest) and forward.destination == PHONE_2
    offer = parse_sdp(forward.request.body)
    assert offer.direction(offer.media[0]) is Direction.SENDONLY
    assert forward.request.uri == parse_uri("sip:bob@10.0.0.22")
    reply = answer(forward.request, 200, "p2", "10.0.0.22", sdp("10.0.0.22", 9000, "recvonly"))
    (back,) = b2bua.response(key(forward.request), reply)
    assert isinstance(back, Respond) and back.response.status == 200
    assert parse_sdp(back.response.body).media[0].port == 40000
    ack = request(
        f"""ACK sip:gw@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/UDP {CALLER[0]}:5060;branch=z9hG4bKack2
From: <sip:carol@other.example>;tag=c1
To: <sip:bob@gw.test>;tag={final.to.tag}
Call-ID: call-a
CSeq: 11 ACK
Max-Forwards: 70"""
    )
    (acked,) = b2bua.ack(ack)
    assert isinstance(acked, SendDirect) and acked.message.cseq.number == 2


def test_info_dtmf_relay_is_passed_through_and_bye_ends_both_legs() -> None:
    b2bua, ports, _, final, two = confirmed()
    info = request(
        f"""INFO sip:gw@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/UDP {CALLER[0]}:5060;branch=z9hG4bKinfo1
From: <sip:carol@other.example>;tag=c1
To: <sip:bob@gw.test>;tag={final.to.tag}
Call-ID: call-a
CSeq: 12 INFO
Max-Forwards: 70
Content-Type: application/dtmf-relay""",
        "Signal=5\r\nDuration=160\r\n",
    )
    (forward,) = b2bua.in_dialog(server_key(info), info)
    assert isinstance(forward, StartRequest)
    assert forward.request.body == b"Signal=5\r\nDuration=160\r\n"
    assert forward.request.header("Content-Type") == "application/dtmf-relay"
    bye = request(
        f"""BYE sip:gw@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/UDP {PHONE_2[0]}:5060;branch=z9hG4bKbye1
From: <sip:bob@gw.test>;tag=p2
To: {two.header("From")}
Call-ID: {two.call_id}
CSeq: 5 BYE
Max-Forwards: 70"""
    )
    actions = b2bua.in_dialog(server_key(bye), bye)
    assert [a.response.status for a in actions if isinstance(a, Respond)] == [200]
    (to_caller,) = [a for a in actions if isinstance(a, StartRequest)]
    assert to_caller.request.method == "BYE" and to_caller.destination == CALLER
    assert any(isinstance(a, CallEnded) and a.answered for a in actions)
    assert ports.closed and b2bua.active_calls() == 0
    # The call is gone: a retransmitted BYE gets 481.
    again = b2bua.in_dialog(server_key(bye), bye)
    assert isinstance(again[0], Respond) and again[0].response.status == 481


def test_timer_c_cancels_a_call_that_rings_too_long() -> None:
    now = [0.0]
    ports = Ports()
    b2bua = B2bua(
        sip_host="192.0.2.1",
        sip_port=5060,
        media_host="192.0.2.1",
        open_media=lambda: ports,
        randbytes=random.Random(5).randbytes,
        clock=lambda: now[0],
    )
    started(b2bua)
    assert b2bua.advance(RING_TIMEOUT - 1) == []
    actions = b2bua.advance(RING_TIMEOUT + 0.5)
    assert [a.response.status for a in actions if isinstance(a, Respond)] == [408]
    assert [a.request.method for a in actions if isinstance(a, StartRequest)] == ["CANCEL"] * 2
    assert ports.closed and b2bua.active_calls() == 0


def test_an_unrefreshed_session_timer_ends_both_legs_and_a_refresh_extends_it() -> None:
    now = [0.0]
    ports = Ports()
    b2bua = B2bua(
        sip_host="192.0.2.1",
        sip_port=5060,
        media_host="192.0.2.1",
        open_media=lambda: ports,
        randbytes=random.Random(6).randbytes,
        clock=lambda: now[0],
    )
    _, starts = started(b2bua)
    two = starts[1].request
    ok = build_response(
        two, 200, "OK", ("Contact", "<sip:bob@10.0.0.22>"), ("Session-Expires", "90;refresher=uac"),
        ("Content-Type", "application/sdp"), to_tag="p2", body=sdp("10.0.0.22", 9000).encode(),
    )  # fmt: skip
    final = next(a for a in b2bua.response(key(two), ok) if isinstance(a, Respond)).response
    assert final.header("Session-Expires") == "90;refresher=uac"  # passed to the caller
    # The caller refreshes at 60 s with UPDATE; the callee's 2xx moves the expiry.
    now[0] = 60.0
    update = request(
        f"""UPDATE sip:gw@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/UDP {CALLER[0]}:5060;branch=z9hG4bKupd1
From: <sip:carol@other.example>;tag=c1
To: <sip:bob@gw.test>;tag={final.to.tag}
Call-ID: call-a
CSeq: 11 UPDATE
Contact: <sip:carol@{CALLER[0]}>
Max-Forwards: 70
Session-Expires: 90;refresher=uac"""
    )
    (forward,) = b2bua.in_dialog(server_key(update), update)
    assert isinstance(forward, StartRequest) and forward.request.method == "UPDATE"
    assert forward.request.header("Session-Expires") == "90;refresher=uac"
    refreshed = build_response(forward.request, 200, "OK", ("Session-Expires", "90;refresher=uac"))
    b2bua.response(key(forward.request), refreshed)
    assert b2bua.advance(90 + SESSION_GRACE + 1) == []  # would have expired without it
    actions = b2bua.advance(60 + 90 + SESSION_GRACE + 1)
    byes = [a for a in actions if isinstance(a, StartRequest)]
    assert sorted(a.destination for a in byes) == sorted([CALLER, PHONE_2])
    assert all(a.request.method == "BYE" for a in byes) and ports.closed

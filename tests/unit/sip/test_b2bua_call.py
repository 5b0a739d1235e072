"""The B2BUA call table: every (state, event) pair either moves as the table says or raises."""

from __future__ import annotations

import math

import pytest

from p2pnode.gateways.sip.b2bua_call import (
    SESSION_GRACE,
    TRANSITIONS,
    Call,
    CallEvent,
    CallState,
    Leg,
    failure_rank,
    session_interval,
)
from p2pnode.gateways.sip.dialog import DialogError
from p2pnode.gateways.sip.media import Side
from p2pnode.gateways.sip.message import SipRequest, SipResponse
from p2pnode.gateways.sip.parser import parse_datagram
from p2pnode.gateways.sip.transaction import ServerKey

INVITE = (
    b"INVITE sip:bob@gw.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=a1\r\nTo: <sip:bob@gw.test>\r\n"
    b"Call-ID: c1@example.org\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


class _Ports:
    def close(self) -> None:
        return None


def _call(state: CallState) -> Call:
    invite = parse_datagram(INVITE)
    assert isinstance(invite, SipRequest)
    return Call(
        ref="r",
        state=state,
        a=Leg(Side.A, ("198.51.100.10", 5060), False),
        a_key=ServerKey("z9hG4bK-1", ("198.51.100.10", 5060), "INVITE"),
        a_invite=invite,
        a_tag="t",
        b_call_id="b@gw",
        b_tag="bt",
        accounts=(),
        media=_Ports(),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("state", list(CallState))
@pytest.mark.parametrize("event", list(CallEvent))
def test_every_pair_moves_by_the_table_or_raises(state: CallState, event: CallEvent) -> None:
    call = _call(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(DialogError):
            call.move(event)
        assert call.state is state  # a refused event leaves the call as it was
    else:
        call.move(event)
        assert call.state is expected


def test_an_ended_call_accepts_nothing() -> None:
    assert not any(state is CallState.ENDED for state, _ in TRANSITIONS)


def test_session_interval_and_failure_rank() -> None:
    def answer(expires: str) -> SipResponse:
        raw = INVITE.replace(b"INVITE sip:bob@gw.test SIP/2.0", b"SIP/2.0 200 OK").replace(
            b"Content-Length: 0", b"Session-Expires: " + expires.encode() + b"\r\nContent-Length: 0"
        )
        response = parse_datagram(raw)
        assert isinstance(response, SipResponse)
        return response

    assert session_interval(answer("90;refresher=uac")) == 90 + SESSION_GRACE
    assert session_interval(answer("9999999999")) == math.inf  # absurd: no expiry
    assert session_interval(answer("x")) == math.inf
    assert sorted([503, 404, 486, 603], key=failure_rank) == [603, 486, 404, 503]

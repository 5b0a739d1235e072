"""build_response derives a response's core headers from its request's: equal to parsing them.

The gateway answers every request (100, 180, 200, 401...) and the full parse of
the copied Via/From/To/Call-ID/CSeq was a third of its per-call parsing work;
the derived core must be exactly what ``parse_core_headers`` would give, for
every valid torture message and every kind of extra header the gateway adds.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.message import SipRequest, build_response, parse_core_headers
from p2pnode.gateways.sip.parser import parse_datagram, serialize
from tests.unit.sip.test_parser import VALID_4475, VALID_5118, vector

EXTRAS: list[tuple[tuple[str, str], ...]] = [
    (),
    (("Contact", "<sip:gw@192.0.2.1:5060>"),),
    (("Contact", '"gw" <sip:gw@192.0.2.1>;expires=60, <sip:gw@[2001:db8::1]>'),),
    (("Record-Route", "<sip:p1.example.com;lr>"), ("Record-Route", "<sip:p2;lr>, <sip:p3;lr>")),
    (("Contact", "*"),),  # not derived: parsed
    (("Expires", "60"), ("Date", "Sat, 13 Nov 2010 23:29:00 GMT")),  # not derived: parsed
    (("Content-Type", "application/sdp"), ("Allow", "INVITE, ACK")),
    (("WWW-Authenticate", 'Digest realm="r", nonce="n"'),),
]
REQUESTS = [
    message
    for name in VALID_4475 + VALID_5118
    if isinstance(message := parse_datagram(vector(name)), SipRequest)
]


@pytest.mark.parametrize("extra", EXTRAS)
@pytest.mark.parametrize("to_tag", [None, "a1b2c3", "bad tag"])
def test_derived_core_equals_the_parsed_one(
    extra: tuple[tuple[str, str], ...], to_tag: str | None
) -> None:
    assert len(REQUESTS) > 20
    for request in REQUESTS:
        if to_tag == "bad tag" and request.to.tag is None:
            # No token: the To it would carry does not parse, as before.
            with pytest.raises(SipDecodeError):
                build_response(request, 180, "Ringing", *extra, to_tag=to_tag)
            continue
        response = build_response(request, 180, "Ringing", *extra, to_tag=to_tag, body=b"x")
        assert response.core == parse_core_headers(response.headers)
        assert parse_datagram(serialize(response)).core == response.core


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(REQUESTS),
    st.text(alphabet="abcXYZ019-._!~", min_size=1, max_size=12),
    st.integers(100, 699),
)
def test_any_token_tag_and_status(request: SipRequest, tag: str, status: int) -> None:
    response = build_response(request, status, "R", ("Contact", "<sip:x@y>"), to_tag=tag)
    assert response.core == parse_core_headers(response.headers)
    assert response.to.tag == (request.to.tag or tag)

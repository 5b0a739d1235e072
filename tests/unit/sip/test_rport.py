"""RFC 3581 / RFC 3261 §18.2.1 Via stamping and answers to unparseable requests."""

from __future__ import annotations

import pytest

from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import Param, Via, parse_vias
from p2pnode.gateways.sip.message import Header, SipRequest, error_response, stamp_received
from p2pnode.gateways.sip.parser import parse_datagram, serialize
from tests.unit.sip.test_parser import VALID_4475, VALID_5118, vector

BASE = (
    b"REGISTER sip:gw.example.org SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKr1%s, SIP/2.0/UDP proxy.example.org\r\n"
    b"From: <sip:alice@gw.example.org>;tag=1\r\n"
    b"To: <sip:alice@gw.example.org>\r\n"
    b"Call-ID: reg1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def registered(suffix: bytes) -> SipRequest:
    message = parse_datagram(BASE % suffix)
    assert isinstance(message, SipRequest)
    return message


@pytest.mark.parametrize(
    ("suffix", "source", "received", "rport"),
    [
        # RFC 3581 §4 example: rport asked for, behind NAT: both filled.
        (b";rport", ("203.0.113.9", 40000), "203.0.113.9", "40000"),
        # rport asked for, no NAT: received still added (RFC 3581 §4), rport filled.
        (b";rport", ("10.0.0.5", 5060), "10.0.0.5", "5060"),
        # No rport, behind NAT: only received (RFC 3261 §18.2.1).
        (b"", ("203.0.113.9", 40000), "203.0.113.9", None),
    ],
)
def test_stamp_received(
    suffix: bytes, source: tuple[str, int], received: str, rport: str | None
) -> None:
    stamped = stamp_received(registered(suffix), source)
    assert stamped.top_via.received == received
    assert stamped.top_via.param("rport") == rport
    assert len(stamped.vias) == 2 and stamped.vias[1] == registered(suffix).vias[1]
    assert parse_datagram(serialize(stamped)) == stamped


def test_no_stamp_when_nothing_differs() -> None:
    request = registered(b"")
    assert stamp_received(request, ("10.0.0.5", 5060)) is request


def test_ipv6_source_is_compared_with_brackets() -> None:
    request = parse_datagram(BASE.replace(b"10.0.0.5:5060", b"[2001:db8::5]:5060") % b"")
    assert isinstance(request, SipRequest)
    assert stamp_received(request, ("2001:db8::5", 5060)) is request
    assert stamp_received(request, ("2001:db8::9", 5060)).top_via.received == "2001:db8::9"


def test_error_response_for_an_unsupported_version() -> None:
    wire = BASE.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1) % b""
    with pytest.raises(SipDecodeError) as refused:
        parse_datagram(wire)
    response = error_response(refused.value.request_headers, refused.value.status, "Version")
    assert response is not None and response.status == 505
    assert response.call_id == "reg1" and len(response.vias) == 2
    with pytest.raises(SipDecodeError) as broken:
        parse_datagram(wire.replace(b"CSeq: 1 REGISTER", b"CSeq: x"))
    assert error_response(broken.value.request_headers, 400, "Bad") is None


_SOURCES = [("192.0.2.7", 40000), ("10.0.0.5", 5060), ("2001:db8::9", 5062)]


@pytest.mark.parametrize("source", _SOURCES)
def test_a_stamped_requests_core_equals_a_full_parse(source: tuple[str, int]) -> None:
    """stamp_received re-parses only the first Via header; the rest of the core is kept.
    It must be exactly what parsing every header again gives (RFC 4475/5118 requests,
    with and without rport, several Via headers and values)."""
    requests = [registered(b""), registered(b";rport")]
    for name in VALID_4475 + VALID_5118:
        message = parse_datagram(vector(name))
        if isinstance(message, SipRequest):
            requests.append(message)
    stamped_any = False
    for request in requests:
        try:
            stamped = stamp_received(request, source)
        except SipDecodeError:
            with pytest.raises(SipDecodeError):
                _full_parse_of_stamp(request, source)
            continue
        stamped_any = stamped_any or stamped is not request
        again = SipRequest.build(stamped.method, stamped.uri, stamped.headers, stamped.body)
        assert stamped.core == again.core
        assert parse_datagram(serialize(stamped)).core == again.core
    assert stamped_any


def _full_parse_of_stamp(request: SipRequest, source: tuple[str, int]) -> SipRequest:
    """The old stamping: rewrite the first Via header, then parse the whole request."""
    top = request.top_via
    params = [p for p in top.params if p.name.lower() != "received"]
    params.append(Param("received", source[0]))
    stamped = Via(top.transport, top.host, top.port, tuple(params))
    headers = list(request.headers)
    index = next(i for i, header in enumerate(headers) if header.name == "Via")
    rest = parse_vias([headers[index].value])[1:]
    headers[index] = Header("Via", ", ".join(str(via) for via in (stamped, *rest)))
    return SipRequest.build(request.method, request.uri, tuple(headers), request.body)

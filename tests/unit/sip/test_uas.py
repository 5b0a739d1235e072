"""RFC 3261 §8.2 prechecks on RFC 4475's application-layer messages (§3.3)."""

from __future__ import annotations

import pytest

from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.parser import parse_datagram
from p2pnode.gateways.sip.uas import UasPolicy, options_response, precheck
from tests.unit.sip.rfc_vectors import VECTORS, load_vector

ENDPOINT = UasPolicy()
PROXY = UasPolicy(forwarding=True)


def request(name: str) -> SipRequest:
    message = parse_datagram(load_vector(VECTORS / "rfc4475" / f"{name}.txt"))
    assert isinstance(message, SipRequest)
    return message


@pytest.mark.parametrize(
    ("name", "policy", "status"),
    [
        ("unkscm", ENDPOINT, 416),  # §3.3.2 unknown Request-URI scheme
        ("novelsc", ENDPOINT, 416),  # §3.3.3 known but not served here
        ("unksm2", ENDPOINT, None),  # §3.3.4 unknown schemes in To/From/Contact are fine
        ("bext01", ENDPOINT, 420),  # §3.3.5 Require we do not support
        ("invut", ENDPOINT, 415),  # §3.3.6 unknown Content-Type
        ("regaut01", ENDPOINT, None),  # §3.3.7 the registrar answers 401
        ("zeromf", PROXY, None),  # §3.3.11 OPTIONS with Max-Forwards 0: answered
        ("sdp01", ENDPOINT, 406),  # §3.3.15 Accept without application/sdp
        ("esc02", ENDPOINT, 501),  # §3.1.1.5 RE%47IST%45R is not REGISTER
        ("intmeth", ENDPOINT, 501),  # §3.1.1.2 an unknown method
        ("inv2543", ENDPOINT, None),  # §3.4.1 RFC 2543 syntax is served
        ("wsinv", ENDPOINT, None),
    ],
)
def test_rfc4475_application_layer(name: str, policy: UasPolicy, status: int | None) -> None:
    refusal = precheck(request(name), policy)
    assert (refusal.status if refusal is not None else None) == status


def test_refusals_carry_what_the_client_needs() -> None:
    bext01 = precheck(request("bext01"), ENDPOINT)
    assert bext01 is not None
    assert bext01.header("Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"
    invut = precheck(request("invut"), ENDPOINT)
    assert invut is not None and "application/sdp" in (invut.header("Accept") or "")
    unknown = precheck(request("intmeth"), ENDPOINT)
    assert unknown is not None and "INVITE" in (unknown.header("Allow") or "")
    narrow = UasPolicy(allowed_methods=frozenset({"OPTIONS", "REGISTER"}))
    invite = precheck(request("inv2543"), narrow)
    assert invite is not None and invite.status == 405
    assert invite.header("Allow") == "OPTIONS, REGISTER"


def test_forwarding_refuses_max_forwards_zero_except_options() -> None:
    zeromf = request("zeromf")
    invite = SipRequest.build(
        "INVITE",
        zeromf.uri,
        tuple(
            type(h)(h.name, h.value.replace("OPTIONS", "INVITE")) if h.name == "CSeq" else h
            for h in zeromf.headers
        ),
        b"",
    )
    refusal = precheck(invite, PROXY)
    assert refusal is not None and refusal.status == 483
    assert precheck(invite, ENDPOINT) is None


def test_options_answer_has_no_banner() -> None:
    answer = options_response(request("zeromf"), ENDPOINT, to_tag="x")
    assert answer.status == 200 and answer.header("Accept") == "application/sdp"
    assert answer.header("Server") is None and answer.header("User-Agent") is None
    assert "OPTIONS" in (answer.header("Allow") or "")


def test_subscribe_to_a_package_we_do_not_serve_is_489() -> None:
    zeromf = request("zeromf")

    def subscribe(event: str | None) -> SipRequest:
        headers = [
            type(h)(h.name, h.value.replace("OPTIONS", "SUBSCRIBE")) if h.name == "CSeq" else h
            for h in zeromf.headers
        ]
        if event is not None:
            headers.insert(-1, type(headers[0])("Event", event))
        return SipRequest.build("SUBSCRIBE", zeromf.uri, tuple(headers), b"")

    mwi = precheck(subscribe("message-summary"), ENDPOINT)
    assert mwi is not None and mwi.status == 489 and mwi.header("Allow-Events") is None
    assert precheck(subscribe(None), ENDPOINT) is not None
    presence = UasPolicy(event_packages=frozenset({"presence"}))
    assert precheck(subscribe("presence;id=1"), presence) is None
    refused = precheck(subscribe("dialog"), presence)
    assert refused is not None and refused.header("Allow-Events") == "presence"

"""The sans-IO STUN server core, in virtual time: answers, RFC 5780 features, drops, limits."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.drops import DropCounter
from nat.ratelimit import RateLimit, SourceRateLimiter
from nat.stun import (
    Attribute,
    ChangeRequest,
    DialBack,
    ErrorCode,
    Fingerprint,
    MappedAddress,
    OtherAddress,
    ResponseOrigin,
    ResponsePort,
    Software,
    StunClass,
    StunMessage,
    StunMethod,
    UnknownAttribute,
    UnknownAttributes,
    XorMappedAddress,
    decode_message,
    encode_message,
)
from nat.stun.server import StunServer, Transmit, error_response, handle_binding

P1 = ("192.0.2.10", 3478)
P2 = ("192.0.2.10", 3479)
A1 = ("192.0.2.20", 3478)
A2 = ("192.0.2.20", 3479)
CLIENT = ("198.51.100.5", 50000)
TID = bytes(range(12))


def request(*attributes: Attribute, tid: bytes = TID) -> bytes:
    return encode_message(StunMessage(StunMethod.BINDING, StunClass.REQUEST, tid, attributes))


def server(**options: object) -> StunServer:
    options.setdefault("dial_back", True)
    return StunServer(P1, alt_ip=A1[0], alt_port=P2[1], **options)  # type: ignore[arg-type]


def only(out: list[Transmit]) -> tuple[Transmit, StunMessage]:
    assert len(out) == 1
    return out[0], decode_message(out[0].data)


def test_local_addresses_are_the_four_combinations() -> None:
    assert server().local_addresses == (P1, P2, A1, A2)
    assert StunServer(P1).local_addresses == (P1,)
    assert StunServer(P1).other_address is None
    assert server().other_address == A2


def test_binding_success_response() -> None:
    transmit, response = only(server().handle_datagram(request(), CLIENT, P1, 0.0))
    assert transmit.local == P1 and transmit.remote == CLIENT
    assert response.cls is StunClass.SUCCESS and response.transaction_id == TID
    assert response.get(XorMappedAddress) == XorMappedAddress(CLIENT)
    assert response.get(MappedAddress) == MappedAddress(CLIENT)
    assert response.get(ResponseOrigin) == ResponseOrigin(P1)
    assert response.get(OtherAddress) == OtherAddress(A2)
    assert response.get(Software) is not None
    assert isinstance(response.attributes[-1], Fingerprint)


def test_single_address_server_has_no_other_address() -> None:
    _, response = only(StunServer(P1).handle_datagram(request(), CLIENT, P1, 0.0))
    assert response.get(OtherAddress) is None
    assert response.get(XorMappedAddress) == XorMappedAddress(CLIENT)


@pytest.mark.parametrize(
    ("local", "change_ip", "change_port", "origin", "other"),
    [
        (P1, False, False, P1, A2),
        (P1, True, False, A1, A2),
        (P1, False, True, P2, A2),
        (P1, True, True, A2, A2),
        (A2, True, True, P1, P1),
        (A1, False, True, A2, P2),
        (P2, True, False, A2, A1),
    ],
)
def test_change_request_answers_from_the_other_address(
    local: tuple[str, int],
    change_ip: bool,
    change_port: bool,
    origin: tuple[str, int],
    other: tuple[str, int],
) -> None:
    data = request(ChangeRequest(change_ip=change_ip, change_port=change_port))
    transmit, response = only(server().handle_datagram(data, CLIENT, local, 0.0))
    assert transmit.local == origin
    assert transmit.remote == CLIENT
    assert response.get(ResponseOrigin) == ResponseOrigin(origin)
    # RFC 5780 §7.4: OTHER-ADDRESS is relative to the address the request reached.
    assert response.get(OtherAddress) == OtherAddress(other)


def test_change_request_without_alternate_is_420() -> None:
    data = request(ChangeRequest(change_ip=True))
    _, response = only(StunServer(P1).handle_datagram(data, CLIENT, P1, 0.0))
    assert response.cls is StunClass.ERROR
    error = response.get(ErrorCode)
    assert error is not None and error.code == 420
    assert response.get(UnknownAttributes) == UnknownAttributes((0x0003,))
    # A CHANGE-REQUEST asking for no change is fine anywhere.
    _, ok = only(StunServer(P1).handle_datagram(request(ChangeRequest()), CLIENT, P1, 0.0))
    assert ok.cls is StunClass.SUCCESS


def test_change_port_only_server() -> None:
    core = StunServer(P1, alt_port=P2[1])
    assert core.local_addresses == (P1, P2)
    transmit, response = only(
        core.handle_datagram(request(ChangeRequest(False, True)), CLIENT, P1, 0)
    )
    assert transmit.local == P2
    assert response.get(OtherAddress) == OtherAddress(P2)
    _, refused = only(core.handle_datagram(request(ChangeRequest(True, False)), CLIENT, P1, 0))
    assert refused.cls is StunClass.ERROR


def test_response_port_changes_only_the_port() -> None:
    transmit, response = only(
        server().handle_datagram(request(ResponsePort(40000)), CLIENT, P1, 0.0)
    )
    assert transmit.remote == (CLIENT[0], 40000)
    assert response.get(XorMappedAddress) == XorMappedAddress(CLIENT)
    _, bad = only(server().handle_datagram(request(ResponsePort(0)), CLIENT, P1, 0.0))
    assert bad.cls is StunClass.ERROR


def test_unknown_comprehension_required_attribute_is_420() -> None:
    data = request(UnknownAttribute(0x7F01, b"x"), UnknownAttribute(0xC123, b"y"))
    transmit, response = only(server().handle_datagram(data, CLIENT, P1, 0.0))
    assert transmit.remote == CLIENT
    error = response.get(ErrorCode)
    assert error is not None and error.code == 420
    assert response.get(UnknownAttributes) == UnknownAttributes((0x7F01,))


def test_unknown_comprehension_optional_attribute_is_ignored() -> None:
    _, response = only(
        server().handle_datagram(request(UnknownAttribute(0xC123, b"")), CLIENT, P1, 0)
    )
    assert response.cls is StunClass.SUCCESS


def test_malformed_attribute_in_request_is_400_with_its_transaction_id() -> None:
    bad = request(UnknownAttribute(0x0003, b"\x00\x00"))  # a CHANGE-REQUEST of 2 bytes
    _, response = only(server().handle_datagram(bad, CLIENT, P1, 0.0))
    assert response.cls is StunClass.ERROR and response.transaction_id == TID
    error = response.get(ErrorCode)
    assert error is not None and error.code == 400


def test_non_binding_request_is_400() -> None:
    data = encode_message(StunMessage(StunMethod.ALLOCATE, StunClass.REQUEST, TID))
    _, response = only(server().handle_datagram(data, CLIENT, P1, 0.0))
    assert response.method is StunMethod.ALLOCATE and response.cls is StunClass.ERROR


def test_garbage_responses_and_indications_are_dropped_and_counted() -> None:
    core = server()
    assert core.handle_datagram(b"hello", CLIENT, P1, 0.0) == []
    assert core.handle_datagram(request()[:-1] + b"\x00" + b"\x00" * 4, CLIENT, P1, 0.0) == []
    answer = encode_message(StunMessage(StunMethod.BINDING, StunClass.SUCCESS, TID))
    assert core.handle_datagram(answer, CLIENT, P1, 0.0) == []
    indication = encode_message(StunMessage(StunMethod.BINDING, StunClass.INDICATION, TID))
    assert core.handle_datagram(indication, CLIENT, P1, 0.0) == []
    assert core.handle_datagram(request(), CLIENT, ("192.0.2.99", 1), 0.0) == []
    drops = core.statistics().drops
    assert drops["stun: not a STUN message"] == 2
    assert drops["stun: unexpected response"] == 1
    assert drops["stun: unknown local address"] == 1
    # ... and it keeps serving.
    _, response = only(core.handle_datagram(request(), CLIENT, P1, 0.0))
    assert response.cls is StunClass.SUCCESS


def test_fingerprint_mismatch_is_dropped() -> None:
    data = bytearray(
        encode_message(StunMessage(StunMethod.BINDING, StunClass.REQUEST, TID), fingerprint=True)
    )
    data[-1] ^= 0xFF
    core = server()
    assert core.handle_datagram(bytes(data), CLIENT, P1, 0.0) == []
    assert core.statistics().drops == {"stun: malformed": 1}


def test_rate_limit_per_source_ip_refills_with_time() -> None:
    core = server(request_limit=RateLimit(rate=1.0, burst=3.0))
    answered = [bool(core.handle_datagram(request(), CLIENT, P1, 10.0)) for _ in range(5)]
    assert answered == [True, True, True, False, False]
    # Another port of the same IP shares the bucket; another IP does not.
    assert core.handle_datagram(request(), (CLIENT[0], 1), P1, 10.0) == []
    assert core.handle_datagram(request(), ("198.51.100.6", 1), P1, 10.0)
    assert core.handle_datagram(request(), CLIENT, P1, 11.0)
    assert core.statistics().drops["stun: rate limited"] == 3


def test_rate_limiter_table_is_bounded() -> None:
    limiter = SourceRateLimiter(RateLimit(1.0, 1.0), max_sources=10)
    for n in range(100):
        assert limiter.allow(f"10.0.0.{n}", 0.0)
    assert len(limiter) == 10


def test_dial_back_probe_goes_to_the_observed_ip_only() -> None:
    out = server().handle_datagram(request(DialBack(6000)), CLIENT, P1, 0.0)
    assert len(out) == 2
    response, probe = out
    assert response.remote == CLIENT
    assert decode_message(response.data).get(DialBack) == DialBack(6000)  # "probe sent"
    assert probe.local is None  # from the dial-back socket, not a listening one
    assert probe.remote == (CLIENT[0], 6000)
    message = decode_message(probe.data)
    assert message.cls is StunClass.REQUEST and message.transaction_id == TID
    assert message.get(XorMappedAddress) == XorMappedAddress(CLIENT)
    # Port 0 means "the port you saw me at".
    out = server().handle_datagram(request(DialBack(0)), CLIENT, P1, 0.0)
    assert out[1].remote == CLIENT


def test_dial_back_is_off_unless_the_owner_can_send_probes() -> None:
    """A core embedded elsewhere (the TURN relay) neither probes nor promises a probe."""
    out = StunServer(P1).handle_datagram(request(DialBack(6000)), CLIENT, P1, 0.0)
    assert len(out) == 1
    assert decode_message(out[0].data).get(DialBack) is None


def test_dial_back_is_rate_limited_separately() -> None:
    core = server(dial_back_limit=RateLimit(rate=0.1, burst=2.0))
    sent = [len(core.handle_datagram(request(DialBack(6000)), CLIENT, P1, 0.0)) for _ in range(4)]
    assert sent == [2, 2, 1, 1]  # responses keep coming, probes stop
    last = core.handle_datagram(request(DialBack(6000)), CLIENT, P1, 0.0)
    assert decode_message(last[0].data).get(DialBack) is None  # no probe, no promise
    assert core.statistics().dial_backs == 2


@given(
    st.lists(
        st.one_of(
            st.builds(DialBack, st.integers(0, 65535)),
            st.builds(ResponsePort, st.integers(0, 65535)),
            st.builds(ChangeRequest, st.booleans(), st.booleans()),
            st.builds(UnknownAttribute, st.integers(0, 0xFFFF), st.binary(max_size=8)),
        ),
        max_size=4,
    ),
    st.ip_addresses(v=4).map(str),
    st.integers(1, 65535),
)
def test_never_sends_to_another_ip(attributes: list[Attribute], ip: str, port: int) -> None:
    """The no-amplification invariant: every datagram goes to the requester's IP."""
    core = server()
    for local in core.local_addresses:
        for transmit in core.handle_datagram(request(*attributes), (ip, port), local, 0.0):
            assert transmit.remote[0] == ip


def test_handle_binding_and_error_response_are_reusable() -> None:
    message = StunMessage(StunMethod.BINDING, StunClass.REQUEST, TID)
    response = handle_binding(message, CLIENT, P1, software="relay")
    assert response.get(Software) == Software("relay")
    assert response.get(OtherAddress) is None
    error = error_response(message, 420, unknown=(0x7777,))
    assert error.get(UnknownAttributes) == UnknownAttributes((0x7777,))


def test_drop_counter_logs_by_the_time_it_is_fed(caplog: pytest.LogCaptureFixture) -> None:
    times = iter([0.0, 1.0, 100.0])
    counter = DropCounter(logging.getLogger("t"), lambda: next(times), log_interval=60.0)
    core = StunServer(P1, drops=counter)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            core.handle_datagram(b"junk", CLIENT, P1, 0.0)
    assert counter.counts() == {"stun: not a STUN message": 3}
    assert len(caplog.records) == 2

"""The SIP parser against RFC 4475 and RFC 5118, a case table, framing, and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import (
    AbsoluteUri,
    SipUri,
    parse_auth,
    parse_cseq,
    parse_name_addresses,
    parse_uri,
    parse_vias,
)
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse
from p2pnode.gateways.sip.parser import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    KeepAlive,
    SipStreamDecoder,
    parse_datagram,
    serialize,
)
from tests.unit.sip.rfc_vectors import VECTORS, load_vector


def vector(name: str) -> bytes:
    folder = "rfc5118" if "-" in name else "rfc4475"
    return load_vector(VECTORS / folder / f"{name}.txt")


# RFC 4475 §3.1.1 (valid), §3.2, §3.3 and §3.4: syntactically valid messages.
VALID_4475 = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
    "semiuri", "transports", "unreason", "noreason", "badbranch", "unkscm", "novelsc",
    "unksm2", "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01", "cparam02",
    "regescrt", "sdp01", "inv2543",
]  # fmt: skip

# RFC 4475 §3.1.2 (invalid) and §3.3.1, §3.3.8, §3.3.9: refused, with the status to answer.
INVALID_4475 = {
    "badinv01": 400,  # §3.1.2.1 extraneous header field separators
    "clerr": 400,  # §3.1.2.2 Content-Length larger than the message
    "ncl": 400,  # §3.1.2.3 negative Content-Length
    "scalar02": 400,  # §3.1.2.4 overlarge scalar fields in a request
    "scalarlg": 400,  # §3.1.2.5 overlarge scalar fields in a response (dropped)
    "quotbal": 400,  # §3.1.2.6 unterminated quoted string
    "ltgtruri": 400,  # §3.1.2.7 <> around the Request-URI
    "lwsruri": 400,  # §3.1.2.8 LWS inside the Request-URI
    "lwsstart": 400,  # §3.1.2.9 several SP between request-line elements
    "trws": 400,  # §3.1.2.10 SP at the end of the request line
    "escruri": 400,  # §3.1.2.11 escaped headers in the Request-URI
    "baddate": 400,  # §3.1.2.12 time zone other than GMT
    "regbadct": 400,  # §3.1.2.13 addr-spec with "?" outside <>
    "badaspec": 400,  # §3.1.2.14 spaces inside <>
    "baddn": 400,  # §3.1.2.15 non-token display name
    "badvers": 505,  # §3.1.2.16 unknown protocol version
    "mismatch01": 400,  # §3.1.2.17 CSeq method differs from the request's
    "mismatch02": 501,  # §3.1.2.18 unknown method, CSeq mismatch: 501 preferred
    "bigcode": 400,  # §3.1.2.19 overlarge response code (dropped)
    "insuf": 400,  # §3.3.1 missing To, From, Call-ID
    "multi01": 400,  # §3.3.8 several values in single-valued fields
    "mcl01": 400,  # §3.3.9 several Content-Length values
}

VALID_5118 = [
    "ipv6-good", "port-ambiguous", "port-unambiguous", "via-received-param-with-delim",
    "via-received-param-no-delim", "ipv4-mapped-ipv6", "ipv6-in-sdp", "mult-ip-in-header",
    "mult-ip-in-sdp", "ipv6-correct-abnf-2-colons",
]  # fmt: skip
INVALID_5118 = {
    "ipv6-bad": 400,  # §4.3 IPv6 Request-URI without brackets
    "ipv6-bug-abnf-3-colons": 400,  # §4.10 the three-colon form from RFC 3261's ABNF bug
}


def test_every_vector_file_is_classified() -> None:
    """A vector added to the folder without a verdict here would silently go untested."""
    files = {path.stem for path in (VECTORS / "rfc4475").glob("*.txt")}
    files |= {path.stem for path in (VECTORS / "rfc5118").glob("*.txt")}
    classified = set(VALID_4475) | set(INVALID_4475) | set(VALID_5118) | set(INVALID_5118)
    assert files == classified


@pytest.mark.parametrize("name", VALID_4475 + VALID_5118)
def test_valid_messages_parse_and_round_trip(name: str) -> None:
    message = parse_datagram(vector(name))
    again = parse_datagram(serialize(message))
    assert again == message
    assert again.core == message.core
    assert serialize(again) == serialize(message)


@pytest.mark.parametrize(("name", "status"), sorted({**INVALID_4475, **INVALID_5118}.items()))
def test_invalid_messages_are_refused_with_their_status(name: str, status: int) -> None:
    with pytest.raises(SipDecodeError) as refused:
        parse_datagram(vector(name))
    assert refused.value.status == status


def test_refused_request_keeps_headers_to_answer_with() -> None:
    with pytest.raises(SipDecodeError) as refused:
        parse_datagram(vector("badvers"))
    names = [name for name, _ in refused.value.request_headers]
    assert "Via" in names
    assert ("Call-ID", "badvers.31417@c.example.com") in refused.value.request_headers


def test_wsinv_folding_compact_forms_and_parameters() -> None:
    message = parse_datagram(vector("wsinv"))
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert isinstance(message.uri, SipUri)
    assert message.uri.param("unknownparam") == ""
    assert message.to.tag == "1918181833n"
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.from_.tag == "98asjd8"
    assert message.max_forwards == 68
    assert (message.cseq.number, message.cseq.method) == (9, "INVITE")
    assert [(via.transport, via.host, via.branch) for via in message.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.header("Subject") == ""
    assert message.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = message.contacts
    assert contact.display_name == 'Quoted string ""'
    assert (contact.param("newparam"), contact.param("secondparam")) == ("newvalue", "")
    assert contact.param("q") == "0.33"
    route = message.routes[0].uri
    assert isinstance(route, SipUri)
    assert (route.host, route.param("lr"), route.param("unknownwith")) == (
        "services.example.com",
        "",
        "value",
    )
    assert len(message.body) == 150


def test_intmeth_unusual_characters() -> None:
    message = parse_datagram(vector("intmeth"))
    assert isinstance(message, SipRequest)
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(message.uri, SipUri)
    assert message.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert message.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"  # noqa: S105
    assert message.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert message.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_.tag == "_token~1'+`*%!-."
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert message.top_via.branch == "z9hG4bK-.!%66*_+`'~"


def test_escapes_stay_escaped_and_unknown_methods_are_distinct() -> None:
    esc01 = parse_datagram(vector("esc01"))
    assert isinstance(esc01, SipRequest) and isinstance(esc01.uri, SipUri)
    assert esc01.uri.user == "sips%3Auser%40example.com"
    esc02 = parse_datagram(vector("esc02"))
    assert isinstance(esc02, SipRequest)
    assert esc02.method == "RE%47IST%45R"  # not REGISTER (RFC 4475 §3.1.1.5)
    assert len(esc02.contacts) == 2  # C%6Fntact is an unknown header, not Contact
    assert esc02.header("C%6Fntact") == "<sip:alias2@host2.example.com>"
    escnull = parse_datagram(vector("escnull"))
    assert [str(contact.uri) for contact in escnull.contacts] == [
        "sip:%00@host5.example.com",
        "sip:%00%00@host5.example.com",
    ]


def test_application_layer_cases_expose_what_the_layer_above_decides_on() -> None:
    unkscm = parse_datagram(vector("unkscm"))
    assert isinstance(unkscm, SipRequest)
    assert unkscm.uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    bext01 = parse_datagram(vector("bext01"))
    assert bext01.option_tags("Require") == ("nothingSupportsThis", "nothingSupportsThisEither")
    assert len(bext01.option_tags("Proxy-Require")) == 2
    (credentials,) = parse_datagram(vector("regaut01")).auth_headers("Authorization")
    assert credentials.scheme == "NoOneKnowsThisScheme"
    assert parse_datagram(vector("zeromf")).max_forwards == 0
    cparam01 = parse_datagram(vector("cparam01")).contacts[0]
    assert cparam01.param("unknownparam") == ""  # a header parameter (no <>)
    assert isinstance(cparam01.uri, SipUri) and cparam01.uri.params == ()
    cparam02 = parse_datagram(vector("cparam02")).contacts[0]
    assert cparam02.param("unknownparam") is None
    assert isinstance(cparam02.uri, SipUri) and cparam02.uri.param("unknownparam") == ""
    regescrt = parse_datagram(vector("regescrt")).contacts[0]
    assert isinstance(regescrt.uri, SipUri)
    assert regescrt.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    inv2543 = parse_datagram(vector("inv2543"))
    assert inv2543.max_forwards is None and inv2543.top_via.branch is None
    bcast = parse_datagram(vector("bcast"))
    assert isinstance(bcast, SipResponse) and bcast.vias[1].host == "255.255.255.255"


@pytest.mark.parametrize(
    ("value", "number"), [("1 OPTIONS", 1), ("1\tOPTIONS", 1), ("007  \t OPTIONS", 7)]
)
def test_cseq_lws_may_be_tabs(value: str, number: int) -> None:
    wire = CASES[0][1].replace(b"CSeq: 1 OPTIONS", b"CSeq: " + value.encode())
    assert parse_datagram(wire).cseq.number == number


def test_dblreq_datagram_keeps_only_the_first_message() -> None:
    message = parse_datagram(vector("dblreq"))
    assert isinstance(message, SipRequest)
    assert message.method == "REGISTER" and message.body == b""


def test_responses_without_or_with_unusual_reason() -> None:
    noreason = parse_datagram(vector("noreason"))
    assert isinstance(noreason, SipResponse) and (noreason.status, noreason.reason) == (100, "")
    unreason = parse_datagram(vector("unreason"))
    assert isinstance(unreason, SipResponse) and unreason.reason.endswith("простое")


def test_rfc5118_ipv6_hosts_and_received() -> None:
    good = parse_datagram(vector("ipv6-good"))
    assert isinstance(good, SipRequest) and isinstance(good.uri, SipUri)
    assert (good.uri.host, good.uri.port) == ("[2001:db8::10]", None)
    ambiguous = parse_datagram(vector("port-ambiguous"))
    assert isinstance(ambiguous, SipRequest) and isinstance(ambiguous.uri, SipUri)
    assert (ambiguous.uri.host, ambiguous.uri.port) == ("[2001:db8::10:5070]", None)
    unambiguous = parse_datagram(vector("port-unambiguous"))
    assert isinstance(unambiguous, SipRequest) and isinstance(unambiguous.uri, SipUri)
    assert (unambiguous.uri.host, unambiguous.uri.port) == ("[2001:db8::10]", 5070)
    assert parse_datagram(vector("via-received-param-with-delim")).top_via.received == (
        "[2001:db8::9:255]"
    )
    assert parse_datagram(vector("via-received-param-no-delim")).top_via.received == (
        "2001:db8::9:255"
    )
    mapped = parse_datagram(vector("ipv4-mapped-ipv6"))
    assert mapped.top_via.sent_by == ("[::ffff:192.0.2.10]", 19823)


# One table for encode and decode: the message as built, and its exact wire bytes.
CASES = [
    (
        SipRequest.build(
            "OPTIONS",
            SipUri("sip", "bob", None, "example.com", None),
            (
                Header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"),
                Header("Max-Forwards", "70"),
                Header("To", "<sip:bob@example.com>"),
                Header("From", '"Alice" <sip:alice@example.com>;tag=a1'),
                Header("Call-ID", "c1@192.0.2.1"),
                Header("CSeq", "1 OPTIONS"),
                Header("Content-Length", "0"),
            ),
            b"",
        ),
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
        b"Call-ID: c1@192.0.2.1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n",
    ),
    (
        SipResponse.build(
            486,
            "Busy Here",
            (
                Header("Via", "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2"),
                Header("To", "<sip:bob@example.com>;tag=b2"),
                Header("From", "<sip:alice@example.com>;tag=a1"),
                Header("Call-ID", "c2"),
                Header("CSeq", "7 INVITE"),
                Header("Content-Length", "4"),
            ),
            b"body",
        ),
        b"SIP/2.0 486 Busy Here\r\n"
        b"Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2\r\n"
        b"To: <sip:bob@example.com>;tag=b2\r\n"
        b"From: <sip:alice@example.com>;tag=a1\r\n"
        b"Call-ID: c2\r\n"
        b"CSeq: 7 INVITE\r\n"
        b"Content-Length: 4\r\n\r\nbody",
    ),
]


@pytest.mark.parametrize(("message", "wire"), CASES)
def test_case_table_encode_and_decode(message: SipRequest | SipResponse, wire: bytes) -> None:
    assert serialize(message) == wire
    assert parse_datagram(wire) == message


@pytest.mark.parametrize(("message", "wire"), CASES)
def test_stream_whole_byte_by_byte_and_with_trailing_data(
    message: SipRequest | SipResponse, wire: bytes
) -> None:
    assert SipStreamDecoder().feed(wire) == [message]
    decoder = SipStreamDecoder()
    items = [item for byte in wire for item in decoder.feed(bytes([byte]))]
    assert items == [message]
    assert decoder.buffered == 0
    decoder = SipStreamDecoder()
    assert decoder.feed(wire + wire[:10]) == [message]
    assert decoder.buffered == 10
    # A datagram ignores what follows Content-Length (RFC 3261 §18.3).
    assert parse_datagram(wire + b"garbage") == message


def test_stream_keepalives_and_many_messages_in_one_read() -> None:
    wire = CASES[0][1]
    decoder = SipStreamDecoder()
    assert decoder.feed(b"\r\n\r\n" + wire + b"\r\n" + wire) == [
        KeepAlive.PING,
        CASES[0][0],
        KeepAlive.PONG,
        CASES[0][0],
    ]


def test_stream_requires_content_length_and_fails_for_good() -> None:
    decoder = SipStreamDecoder()
    headless = CASES[0][1].replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipDecodeError) as refused:
        decoder.feed(headless)
    assert refused.value.status == 400
    with pytest.raises(SipDecodeError):
        decoder.feed(CASES[0][1])


def test_size_caps() -> None:
    wire = CASES[0][1]
    big_header = wire.replace(b"\r\n\r\n", b"\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")
    with pytest.raises(SipDecodeError) as refused:
        parse_datagram(big_header)
    assert refused.value.status == 513
    many = wire.replace(b"\r\n\r\n", b"\r\n" + b"X-A: 1\r\n" * MAX_HEADER_FIELDS + b"\r\n")
    with pytest.raises(SipDecodeError) as refused:
        parse_datagram(many)
    assert refused.value.status == 513
    body = b"x" * (MAX_BODY_BYTES + 1)
    large = wire.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body
    with pytest.raises(SipDecodeError) as refused:
        parse_datagram(large)
    assert refused.value.status == 413
    with pytest.raises(SipDecodeError) as refused:
        SipStreamDecoder().feed(large[: len(wire) + 50])
    assert refused.value.status == 413
    with pytest.raises(SipDecodeError) as refused:
        SipStreamDecoder().feed(b"OPTIONS " + b"a" * MAX_HEAD_BYTES)
    assert refused.value.status == 513


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"", 400),
        (b"\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", 400),  # no Via, From, To...
        (CASES[0][1].replace(b"CSeq: 1", b"CSeq: 2147483648"), 400),  # >= 2**31
        (CASES[0][1].replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400),
        (CASES[0][1].replace(b"SIP/2.0\r\n", b"SIP/2.0\n"), 400),  # bare LF
        (CASES[0][1].replace(b"sip:bob@example.com SIP", b"sip:bob@exa mple.com SIP"), 400),
        (CASES[0][1].replace(b"To: <sip:bob", b"To: <sip:bob@[::1"), 400),
        (CASES[0][1].replace(b"Via: SIP/2.0/UDP", b"Via: SIP/3.0/UDP"), 400),
        (CASES[0][1].replace(b"5060;", b"65536;"), 400),
        (CASES[0][1].replace(b"Call-ID: c1", b"Call-ID: c 1"), 400),
        (CASES[1][1].replace(b"486", b"099"), 400),
        (b" " + CASES[0][1], 400),
    ],
)
def test_malformed_table(wire: bytes, status: int) -> None:
    with pytest.raises(SipDecodeError) as refused:
        parse_datagram(wire)
    assert refused.value.status == status


_SAMPLES = [vector(name) for name in ("wsinv", "intmeth", "esc01", "longreq", "ipv6-good")]


@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(SipDecodeError):
        parse_datagram(data)


@given(
    st.sampled_from(_SAMPLES),
    st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=4)), max_size=6),
    st.lists(st.integers(1, 64), min_size=1, max_size=20),
)
def test_fuzz_mutated_messages_and_random_chunks(
    sample: bytes, edits: list[tuple[int, bytes]], chunks: list[int]
) -> None:
    data = bytearray(sample)
    for offset, replacement in edits:
        position = offset % len(data)
        data[position : position + len(replacement)] = replacement
    try:
        message = parse_datagram(bytes(data))
    except SipDecodeError:
        pass
    else:
        assert parse_datagram(serialize(message)) == message
    decoder = SipStreamDecoder()
    position = 0
    try:
        for size in chunks * 100:
            if position >= len(data):
                break
            decoder.feed(bytes(data[position : position + size]))
            position += size
    except SipDecodeError:
        pass


_HEADER_ALPHABET = st.sampled_from(list("sip:@;=,<>\"\\ \t/?&%[]:.-_+~*'()!aZ09\x00\x7f\u00e9"))


@given(st.text(_HEADER_ALPHABET, max_size=60))
def test_fuzz_header_value_parsers_only_raise_decode_error(text: str) -> None:
    for parse in (
        lambda: parse_uri(text),
        lambda: parse_name_addresses(text, "Contact", single=False),
        lambda: parse_name_addresses(text, "From", single=True),
        lambda: parse_vias([text]),
        lambda: parse_cseq(text),
        lambda: parse_auth(text),
    ):
        with contextlib.suppress(SipDecodeError):
            value = parse()
            assert value is not None


_SIP_URI = (
    r"[sS][iI][pP][sS]?:([A-Za-z0-9%;=&+$,?/._~*'()!-]+(:[A-Za-z0-9&=+$,._-]*)?@)?"
    r"([a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*|\[[0-9a-f:]{2,20}\]|[0-9]{1,3}(\.[0-9]{1,3}){3})"
    r"(:[0-9]{1,6})?(;[a-z%0-9]+(=[a-z0-9:\[\]]+)?){0,3}(\?[a-z]+=[a-z0-9%]*)?"
)


@given(st.one_of(st.from_regex(_SIP_URI, fullmatch=True), st.text(_HEADER_ALPHABET, max_size=40)))
def test_fuzz_uris_that_parse_render_back_to_equal_values(text: str) -> None:
    try:
        uri = parse_uri(text)
    except SipDecodeError:
        return
    assert parse_uri(str(uri)) == uri


def test_only_short_values_enter_the_parse_caches() -> None:
    from p2pnode.gateways.sip import headers

    headers._parse_uri_cached.cache_clear()  # other tests may have filled it
    before = headers._parse_uri_cached.cache_info().currsize
    long_uri = "sip:" + "a" * 300 + "@example.com"
    assert isinstance(parse_uri(long_uri), SipUri)
    assert headers._parse_uri_cached.cache_info().currsize == before
    parse_uri("sip:short-and-new-" + str(before) + "@example.com")
    assert headers._parse_uri_cached.cache_info().currsize == before + 1
    assert headers._parse_uri_cached.cache_info().maxsize == 4096

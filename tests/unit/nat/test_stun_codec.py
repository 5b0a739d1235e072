"""The STUN codec four ways: RFC 5769 vectors, a case table, truncation/trailing data, fuzz."""

from __future__ import annotations

import contextlib
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.stun import (
    AdditionalAddressFamily,
    AddressErrorCode,
    AddressFamily,
    AlternateDomain,
    AlternateServer,
    Attribute,
    ChangeRequest,
    ChannelNumber,
    Data,
    DialBack,
    DontFragment,
    ErrorCode,
    EvenPort,
    Fingerprint,
    IceControlled,
    IceControlling,
    Icmp,
    Lifetime,
    MappedAddress,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    OtherAddress,
    Padding,
    PasswordAlgorithm,
    PasswordAlgorithms,
    Priority,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    ResponseOrigin,
    ResponsePort,
    Software,
    StunAttributeError,
    StunClass,
    StunDecodeError,
    StunMessage,
    StunMethod,
    UnknownAttribute,
    UnknownAttributes,
    UseCandidate,
    UserHash,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    check_integrity,
    decode_message,
    encode_message,
    long_term_key,
    looks_like_stun,
)

# ---------------------------------------------------------------- RFC 5769 vectors
# Typed from RFC 5769 §2.1-§2.4 (the RFC's own hex dumps, one line per 4 bytes).
TID_1 = bytes.fromhex("b7e7a701bc34d686fa87dfae")
SHORT_TERM_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

SAMPLE_REQUEST = bytes.fromhex(
    "00010058"  # Request type and message length
    "2112a442"  # Magic cookie
    "b7e7a701bc34d686fa87dfae"  # Transaction ID
    "80220010"  # SOFTWARE attribute header
    "5354554e"
    "20746573"
    "7420636c"
    "69656e74"  # "STUN test client"
    "00240004"  # PRIORITY attribute header
    "6e0001ff"  # ICE priority value
    "80290008"  # ICE-CONTROLLED attribute header
    "932ff9b1"
    "51263b36"  # Pseudo-random tie breaker
    "00060009"  # USERNAME attribute header
    "6576746a"
    "3a683676"
    "59202020"  # Username (9 bytes) and padding (3 bytes)
    "00080014"  # MESSAGE-INTEGRITY attribute header
    "9aeaa70c"
    "bfd8cb56"
    "781ef2b5"
    "b2d3f249"
    "c1b571a2"  # HMAC-SHA1 fingerprint
    "80280004"  # FINGERPRINT attribute header
    "e57a3bcf"  # CRC32 fingerprint
)

SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"  # SOFTWARE attribute header
    "74657374"
    "20766563"
    "746f7220"  # UTF-8 server name
    "00200008"  # XOR-MAPPED-ADDRESS attribute header
    "0001a147"  # Address family (IPv4) and xor'd mapped port number
    "e112a643"  # Xor'd mapped IPv4 address
    "00080014"  # MESSAGE-INTEGRITY attribute header
    "2b91f599"
    "fd9e90c3"
    "8c7489f9"
    "2af9ba53"
    "f06be7d7"
    "80280004"  # FINGERPRINT attribute header
    "c07d4c96"
)

SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"
    "74657374"
    "20766563"
    "746f7220"
    "00200014"  # XOR-MAPPED-ADDRESS attribute header
    "0002a147"  # Address family (IPv6) and xor'd mapped port number
    "0113a9fa"
    "a5d3f179"
    "bc25f4b5"
    "bed2b9d9"  # Xor'd mapped IPv6 address
    "00080014"
    "a382954e"
    "4be67bf1"
    "1784c97c"
    "8292c275"
    "bfe3ed41"
    "80280004"
    "c8fb0b4c"
)

TID_4 = bytes.fromhex("78ad3433c6ad72c029da412e")
LONG_TERM_REQUEST = bytes.fromhex(
    "00010060"
    "2112a442"
    "78ad3433c6ad72c029da412e"
    "00060012"  # USERNAME attribute header
    "e3839ee3"
    "8388e383"
    "aae38383"
    "e382afe3"
    "82b90000"  # Username value (18 bytes) and padding (2 bytes)
    "0015001c"  # NONCE attribute header
    "662f2f34"
    "39396b39"
    "35346436"
    "4f4c3334"
    "6f4c3946"
    "53547679"
    "36347341"  # Nonce value
    "0014000b"  # REALM attribute header
    "6578616d"
    "706c652e"
    "6f726700"  # Realm value (11 bytes) and padding (1 byte)
    "00080014"  # MESSAGE-INTEGRITY attribute header
    "f6702465"
    "6dd64a3e"
    "02b8e071"
    "2e85c9a2"
    "8ca89666"
)
LONG_TERM_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # "マトリックス"
# The RFC's password "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep, as RFC 5769 states.
LONG_TERM_PASSWORD = "TheMatrIX"  # noqa: S105  (a published test vector)


def test_rfc5769_sample_request() -> None:
    message = decode_message(SAMPLE_REQUEST)
    assert message.method is StunMethod.BINDING
    assert message.cls is StunClass.REQUEST
    assert message.transaction_id == TID_1
    assert message.get(Software) == Software("STUN test client")
    assert message.get(Priority) == Priority(0x6E0001FF)
    assert message.get(IceControlled) == IceControlled(0x932FF9B151263B36)
    assert message.get(Username) == Username("evtj:h6vY")
    assert check_integrity(SAMPLE_REQUEST, SHORT_TERM_PASSWORD)
    assert not check_integrity(SAMPLE_REQUEST, b"VOkJxbRl1RmTxUk/WvJxBr")
    # Re-encoding from the typed fields gives the RFC's bytes (it pads with spaces).
    rebuilt = StunMessage(
        StunMethod.BINDING,
        StunClass.REQUEST,
        TID_1,
        (
            Software("STUN test client"),
            Priority(0x6E0001FF),
            IceControlled(0x932FF9B151263B36),
            Username("evtj:h6vY"),
        ),
    )
    encoded = encode_message(
        rebuilt, integrity_key=SHORT_TERM_PASSWORD, fingerprint=True, pad_byte=0x20
    )
    assert encoded == SAMPLE_REQUEST


@pytest.mark.parametrize(
    ("vector", "address"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
    ids=["ipv4", "ipv6"],
)
def test_rfc5769_sample_responses(vector: bytes, address: tuple[str, int]) -> None:
    message = decode_message(vector)
    assert message.cls is StunClass.SUCCESS
    assert message.get(XorMappedAddress) == XorMappedAddress(address)
    assert message.get(Software) == Software("test vector")
    assert check_integrity(vector, SHORT_TERM_PASSWORD)
    rebuilt = StunMessage(
        StunMethod.BINDING,
        StunClass.SUCCESS,
        TID_1,
        (Software("test vector"), XorMappedAddress(address)),
    )
    encoded = encode_message(
        rebuilt, integrity_key=SHORT_TERM_PASSWORD, fingerprint=True, pad_byte=0x20
    )
    assert encoded == vector


def test_rfc5769_long_term_request() -> None:
    message = decode_message(LONG_TERM_REQUEST)
    assert message.transaction_id == TID_4
    assert message.get(Username) == Username(LONG_TERM_USERNAME)
    assert message.get(Nonce) == Nonce("f//499k954d6OL34oL9FSTvy64sA")
    assert message.get(Realm) == Realm("example.org")
    key = long_term_key(LONG_TERM_USERNAME, "example.org", LONG_TERM_PASSWORD)
    assert check_integrity(LONG_TERM_REQUEST, key)
    assert not check_integrity(LONG_TERM_REQUEST, long_term_key(LONG_TERM_USERNAME, "x", "y"))
    rebuilt = StunMessage(
        StunMethod.BINDING,
        StunClass.REQUEST,
        TID_4,
        (
            Username(LONG_TERM_USERNAME),
            Nonce("f//499k954d6OL34oL9FSTvy64sA"),
            Realm("example.org"),
        ),
    )
    assert encode_message(rebuilt, integrity_key=key) == LONG_TERM_REQUEST


def test_fingerprint_mismatch_is_rejected() -> None:
    broken = SAMPLE_REQUEST[:-1] + bytes([SAMPLE_REQUEST[-1] ^ 1])
    with pytest.raises(StunDecodeError, match="FINGERPRINT"):
        decode_message(broken)


def test_integrity_covers_every_byte() -> None:
    """Flipping any byte before MESSAGE-INTEGRITY breaks it (cookie/length flips break parsing)."""
    end = len(LONG_TERM_REQUEST) - 24
    key = long_term_key(LONG_TERM_USERNAME, "example.org", LONG_TERM_PASSWORD)
    for index in range(end):
        flipped = bytearray(LONG_TERM_REQUEST)
        flipped[index] ^= 0x01
        assert not check_integrity(bytes(flipped), key), index


# ---------------------------------------------------------------- case table
TID = bytes(range(12))
V4 = ("203.0.113.7", 40000)
V6 = ("2001:db8::1", 3478)

CASES: list[tuple[Attribute, str]] = [
    (MappedAddress(V4), "0001000800019c40cb007107"),
    (XorMappedAddress(V4), "002000080001bd52ea12d545"),
    (AlternateServer(V4), "8023000800019c40cb007107"),
    (ResponseOrigin(V4), "802b000800019c40cb007107"),
    (OtherAddress(V6), "802c001400020d9620010db8000000000000000000000001"),
    (XorPeerAddress(V4), "001200080001bd52ea12d545"),
    (
        XorRelayedAddress(V6),
        "0016001400022c840113a9fa000102030405060708090a0a",
    ),
    (Username("bob"), "0006000362 6f6200"),
    (Realm("example.org"), "0014000b6578616d706c652e6f726700"),
    (Nonce("n"), "001500016e000000"),
    (Software("p2pnode"), "8022000770327 06e6f646500"),
    (AlternateDomain("a.example"), "800300096 12e6578616d706c65000000"),
    (UserHash(bytes(32)), "001e0020" + "00" * 32),
    (MessageIntegrity(bytes(20)), "00080014" + "00" * 20),
    (MessageIntegritySha256(bytes(16)), "001c0010" + "00" * 16),
    (Padding(b"\x01\x02"), "0026000201020000"),
    (Data(b"hello"), "0013000568656c6c6f000000"),
    (ReservationToken(b"12345678"), "002200083132333435363738"),
    (Fingerprint(0xDEADBEEF), "80280004deadbeef"),
    (
        ErrorCode(420, "Unknown Attribute"),
        "000900150000041455 6e6b6e6f776e2041747472696275746500 0000",
    ),
    (UnknownAttributes((0x1234, 0x0002)), "000a000412340002"),
    (UnknownAttributes((0x1234,)), "000a000212340000"),
    (PasswordAlgorithm(2), "001d000400020000"),
    (
        PasswordAlgorithms((PasswordAlgorithm(1), PasswordAlgorithm(2, b"x"))),
        "8002000c000100000002000178000000",
    ),
    (ChangeRequest(change_ip=True, change_port=True), "0003000400000006"),
    (ChangeRequest(change_port=True), "0003000400000002"),
    (ChangeRequest(), "0003000400000000"),
    (ResponsePort(5000), "0027000413880000"),
    (ChannelNumber(0x4001), "000c000440010000"),
    (DialBack(6000), "c0db000417700000"),
    (Lifetime(600), "000d000400000258"),
    (Priority(1), "0024000400000001"),
    (IceControlled(1), "802900080000000000000001"),
    (IceControlling(2), "802a00080000000000000002"),
    (UseCandidate(), "00250000"),
    (DontFragment(), "001a0000"),
    (RequestedAddressFamily(AddressFamily.IPV6), "0017000402000000"),
    (AdditionalAddressFamily(AddressFamily.IPV6), "8000000402000000"),
    (EvenPort(reserve=True), "0018000180000000"),
    (EvenPort(), "0018000100000000"),
    (RequestedTransport(17), "0019000411000000"),
    (AddressErrorCode(AddressFamily.IPV4, 440, ""), "8001000401000428"),
    (Icmp(3, 1, 7), "800400080000030100000007"),
    (UnknownAttribute(0x7FFF, b"ab"), "7fff000261620000"),
]


def _message(*attributes: Attribute) -> StunMessage:
    return StunMessage(StunMethod.BINDING, StunClass.REQUEST, TID, attributes)


@pytest.mark.parametrize(("attribute", "wire_hex"), CASES, ids=lambda c: repr(c)[:40])
def test_case_table(attribute: Attribute, wire_hex: str) -> None:
    wire = bytes.fromhex(wire_hex.replace(" ", ""))
    encoded = encode_message(_message(attribute))
    assert encoded[20:] == wire
    if isinstance(attribute, Fingerprint):  # a made-up CRC must be refused
        with pytest.raises(StunDecodeError, match="FINGERPRINT"):
            decode_message(encoded)
        return
    decoded = decode_message(encoded)
    assert decoded.attributes == (attribute,)


@pytest.mark.parametrize(
    ("attribute_hex", "why"),
    [
        ("00200004000100ff", "IPv4 address too short"),
        ("0020000c0001bd52ea12d54500000000", "IPv4 address too long"),
        ("002000080003bd52ea1255a3", "unknown family"),
        ("00080013" + "00" * 19 + "00", "MESSAGE-INTEGRITY not 20 bytes"),
        ("001c0012" + "00" * 18 + "0000", "MESSAGE-INTEGRITY-SHA256 not a multiple of 4"),
        ("000900040000020a", "error class 2"),
        ("0009000400000364", "error number 100"),
        ("00060002ffff0000", "USERNAME not UTF-8"),
        ("0003000200000000", "CHANGE-REQUEST short"),
        ("000d000500000000ff000000", "LIFETIME long"),
        ("000a000312340000", "UNKNOWN-ATTRIBUTES odd"),
        ("0017000403000000", "REQUESTED-ADDRESS-FAMILY unknown"),
        ("001d0004000200ff", "PASSWORD-ALGORITHM parameters overrun"),
        ("00250004000000000", "USE-CANDIDATE with a value"),
    ],
)
def test_malformed_known_attribute_is_a_bad_request(attribute_hex: str, why: str) -> None:
    body = bytes.fromhex(attribute_hex[: len(attribute_hex) // 2 * 2])
    body += b"\x00" * (-len(body) % 4)
    data = struct.pack("!HHI", 0x0001, len(body), 0x2112A442) + TID + body
    with pytest.raises(StunAttributeError) as raised:
        decode_message(data)
    assert raised.value.transaction_id == TID, why
    assert raised.value.method is StunMethod.BINDING


def test_unknown_comprehension_required_listed_once() -> None:
    message = _message(
        UnknownAttribute(0x7001, b""),
        UnknownAttribute(0xC001, b"x"),
        UnknownAttribute(0x7001, b"y"),
        UnknownAttribute(0x0002, b""),
    )
    decoded = decode_message(encode_message(message))
    assert decoded.unknown_comprehension_required() == (0x7001, 0x0002)


def test_get_returns_first_and_get_all_returns_all() -> None:
    a, b = XorPeerAddress(V4), XorPeerAddress(("198.51.100.1", 1))
    message = decode_message(encode_message(_message(a, Lifetime(1), b)))
    assert message.get(XorPeerAddress) == a
    assert message.get_all(XorPeerAddress) == (a, b)
    assert message.get(MappedAddress) is None


def test_every_method_and_class_round_trips() -> None:
    for method in StunMethod:
        for cls in StunClass:
            message = StunMessage(method, cls, TID)
            assert decode_message(encode_message(message)) == message


def test_unknown_method_is_rejected() -> None:
    data = struct.pack("!HHI", 0x0002, 0, 0x2112A442) + TID
    with pytest.raises(StunDecodeError, match="unknown method"):
        decode_message(data)


def test_attributes_after_integrity_are_ignored_but_fingerprint_is_checked() -> None:
    key = b"secret"
    data = encode_message(_message(Username("u")), integrity_key=key, fingerprint=True)
    # Splice an attribute between MESSAGE-INTEGRITY and FINGERPRINT: ignored on decode.
    before_fp = data[:-8]
    extra = bytes.fromhex("80220004") + b"evil"
    spliced = before_fp + extra
    header = spliced[:2] + (len(spliced) - 20 + 8).to_bytes(2, "big") + spliced[4:]
    crc = (zlib.crc32(header) & 0xFFFFFFFF) ^ 0x5354554E
    full = header + bytes.fromhex("80280004") + crc.to_bytes(4, "big")
    decoded = decode_message(full)
    assert decoded.get(Software) is None
    assert decoded.get(Fingerprint) is not None
    assert check_integrity(full, key)


def test_sha256_integrity_and_truncation() -> None:
    key = b"k" * 16
    data = encode_message(_message(Username("u")), integrity_key=key, integrity_sha256=True)
    assert decode_message(data).get(MessageIntegritySha256) is not None
    assert check_integrity(data, key)
    assert not check_integrity(data, b"other")
    assert not check_integrity(encode_message(_message(Username("u"))), key)  # none present


def test_fingerprint_must_be_last() -> None:
    data = encode_message(_message(Fingerprint(0), Username("u")))
    with pytest.raises(StunDecodeError, match="last"):
        decode_message(data)


def test_long_term_key_sha256_differs() -> None:
    md5 = long_term_key("u", "r", "p")
    sha = long_term_key("u", "r", "p", sha256=True)
    assert len(md5) == 16 and len(sha) == 32


@pytest.mark.parametrize(
    "bad",
    [
        lambda: ErrorCode(200),
        lambda: ErrorCode(700),
        lambda: XorMappedAddress(("not-an-ip", 1)),
        lambda: XorMappedAddress(("1.2.3.4", 70000)),
        lambda: Lifetime(-1),
        lambda: Username("x" * 600),
        lambda: MessageIntegrity(b"short"),
        lambda: StunMessage(StunMethod.BINDING, StunClass.REQUEST, b"short"),
    ],
)
def test_constructors_refuse_unencodable_values(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


# ---------------------------------------------------------------- truncation, trailing data
def test_every_truncation_is_a_decode_error() -> None:
    for vector in (SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, LONG_TERM_REQUEST):
        for cut in range(len(vector)):
            with pytest.raises(StunDecodeError):
                decode_message(vector[:cut])
            assert not check_integrity(vector[:cut], SHORT_TERM_PASSWORD)


def test_trailing_data_is_a_decode_error() -> None:
    for trailer in (b"\x00", b"\x00" * 4, b"\x80\x22\x00\x00"):
        with pytest.raises(StunDecodeError):
            decode_message(SAMPLE_IPV4_RESPONSE + trailer)


def test_looks_like_stun() -> None:
    assert looks_like_stun(SAMPLE_REQUEST)
    assert not looks_like_stun(b"\x40\x00\x00\x04abcd")  # ChannelData
    assert not looks_like_stun(SAMPLE_REQUEST[:-4])
    assert not looks_like_stun(b"")


# ---------------------------------------------------------------- fuzz
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(StunDecodeError):
        decode_message(data)
    check_integrity(data, b"key")


def _valid_header(body: bytes, message_type: int) -> bytes:
    body = body[: len(body) // 4 * 4]
    return struct.pack("!HHI", message_type & 0x3FFF, len(body), 0x2112A442) + TID + body


@given(st.binary(max_size=300), st.sampled_from([0x0001, 0x0101, 0x0111, 0x0003, 0x0016]))
def test_fuzz_valid_header_random_attributes(body: bytes, message_type: int) -> None:
    """Past the header check, so the attribute decoders themselves get fuzzed."""
    data = _valid_header(body, message_type)
    with contextlib.suppress(StunDecodeError):
        decode_message(data)
    check_integrity(data, b"key")


@given(
    st.sampled_from([a for a, _ in CASES]).flatmap(
        lambda a: st.tuples(st.just(a), st.integers(0, 60), st.integers(0, 255))
    )
)
def test_fuzz_mutated_valid_messages(case: tuple[Attribute, int, int]) -> None:
    attribute, position, value = case
    data = bytearray(encode_message(_message(attribute, Software("x")), fingerprint=False))
    data[position % len(data)] = value
    with contextlib.suppress(StunDecodeError):
        decode_message(bytes(data))


_addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)).flatmap(
    lambda ip: st.tuples(st.just(ip), st.integers(0, 65535))
)

_attributes: st.SearchStrategy[Attribute] = st.one_of(
    _addresses.map(XorMappedAddress),
    _addresses.map(MappedAddress),
    _addresses.map(OtherAddress),
    st.text(max_size=40).map(Software),
    st.text(max_size=40).map(Username),
    st.binary(max_size=50).map(Data),
    st.integers(0, 2**32 - 1).map(Lifetime),
    st.builds(ChangeRequest, st.booleans(), st.booleans()),
    st.integers(0, 65535).map(ResponsePort),
    st.builds(ErrorCode, st.integers(300, 699), st.text(max_size=20)),
    st.builds(UnknownAttribute, st.integers(0xC000, 0xC0DA), st.binary(max_size=20)),
)


@given(
    st.lists(_attributes, max_size=8),
    st.sampled_from(list(StunMethod)),
    st.sampled_from(list(StunClass)),
    st.binary(min_size=12, max_size=12),
    st.booleans(),
)
def test_round_trip_property(
    attributes: list[Attribute],
    method: StunMethod,
    cls: StunClass,
    tid: bytes,
    fingerprint: bool,
) -> None:
    message = StunMessage(method, cls, tid, tuple(attributes))
    data = encode_message(message, fingerprint=fingerprint)
    decoded = decode_message(data)
    expected = tuple(attributes)
    if fingerprint:
        assert isinstance(decoded.attributes[-1], Fingerprint)
        assert decoded.attributes[:-1] == expected
    else:
        assert decoded.attributes == expected
    assert looks_like_stun(data)

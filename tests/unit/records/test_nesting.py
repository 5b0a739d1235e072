"""Issue 10 finding 1: deep msgpack nesting in any field of any record or payload.

A field nested ~1,000 deep once made ``decode_record`` (and the credentials,
relay-advert and directory codecs) format the value with ``!r``, which raised
``RecursionError`` past every ``except ValueError``. Here hypothesis puts deep
nesting (arrays, array16s and maps, up to 3,000 levels) and a marker string at
EVERY position of a valid encoding of every type, and checks that decoding
raises only that codec's decode error, whose text never quotes the marker.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.connectivity.credentials import (
    CredentialsDecodeError,
    CredentialsReply,
    CredentialStatus,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    signed_request,
)
from p2pnode.connectivity.relay_advert import (
    RelayAdvert,
    RelayAdvertDecodeError,
    decode_relay_advert,
    encode_relay_advert,
)
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.payloads import (
    EnumEntry,
    NameClaim,
    PayloadDecodeError,
    Revocation,
    decode_enum_entry,
    decode_name_claim,
    decode_revocation,
    encode_enum_entry,
    encode_name_claim,
    encode_revocation,
)
from p2pnode.directory.verifiers import (
    TOKEN_PREFIX,
    EndorsementToken,
    TokenError,
    countersign,
    decode_token,
    encode_token,
)
from p2pnode.identity import Identity
from p2pnode.records import RecordDecodeError, RecordKind, decode_record, sign_record
from p2pnode.records.fields import FieldReader, Limits, MsgpackFramingError, nesting_depth

NOW = 1_800_000_000.0
OWNER = Identity.generate(bytes([1]) * 32)
VERIFIER = Identity.generate(bytes([2]) * 32)
MARKER = "ATTACKER-VALUE-\u2603"
NUMBER = "+18005550100"


@dataclass(frozen=True)
class Raw:
    """Pre-encoded msgpack bytes placed verbatim inside a template."""

    data: bytes


def pack(value: object) -> bytes:
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, list):
        count = len(value)
        header = bytes([0x90 | count]) if count < 16 else b"\xdc" + count.to_bytes(2, "big")
        return header + b"".join(pack(item) for item in value)
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def paths(value: object, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position in a template: each container and each leaf."""
    found = [prefix] if prefix else []
    if isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replaced(value: object, path: tuple[int, ...], new: object) -> object:
    if not path:
        return new
    assert isinstance(value, list)
    copy = list(value)
    copy[path[0]] = replaced(copy[path[0]], path[1:], new)
    return copy


def nested_bytes(depth: int, style: str, leaf: bytes) -> bytes:
    opener = {"fixarray": b"\x91", "array16": b"\xdc\x00\x01", "map": b"\x81\x00"}[style]
    return opener * depth + leaf


def nested_value(depth: int) -> object:
    """A Python list nested ``depth`` deep, built without recursion."""
    value: object = MARKER
    for _ in range(depth):
        value = [value]
    return value


def _record_template() -> list[object]:
    record = sign_record(OWNER, RecordKind.ENUM_ENTRY, NUMBER, b"payload", seq=5, now=NOW, ttl=3600)
    template = msgpack.unpackb(record.encoded, raw=False)
    assert isinstance(template, list)
    return template


def _payload(encoded: bytes) -> list[object]:
    template = msgpack.unpackb(encoded, raw=False)
    assert isinstance(template, list)
    return template


ENDORSEMENT = countersign(VERIFIER, RecordKind.ENUM_ENTRY, NUMBER, OWNER.public_key, now=NOW)
ADVERT = RelayAdvert(
    udp=(("192.0.2.1", 3478), ("2001:db8::1", 3478)),
    tcp=(("192.0.2.1", 3478),),
    dht=(("192.0.2.1", 4000),),
    realm="p2pnode",
    capacity=100,
    load=3,
    uptime=60,
    software="p2pnode 0.1",
    stun=(("192.0.2.1", 3479),),
)


def _token(data: bytes) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _token_template() -> list[object]:
    text = encode_token(
        EndorsementToken(RecordKind.ENUM_ENTRY, NUMBER, OWNER.public_key, ENDORSEMENT)
    )
    encoded = text[len(TOKEN_PREFIX) :]
    return _payload(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


# name -> (valid template, decoder of the packed bytes, the codec's one error type)
BYTE_CODECS: dict[str, tuple[list[object], Callable[[bytes], object], type[ValueError]]] = {
    "record": (_record_template(), decode_record, RecordDecodeError),
    "enum-entry": (
        _payload(encode_enum_entry(EnumEntry((sip_directive("sip:a@b.example"),), (ENDORSEMENT,)))),
        decode_enum_entry,
        PayloadDecodeError,
    ),
    "name-claim": (
        _payload(encode_name_claim(NameClaim((ENDORSEMENT,)))),
        decode_name_claim,
        PayloadDecodeError,
    ),
    "revocation": (
        _payload(encode_revocation(Revocation(RecordKind.ENUM_ENTRY, NUMBER, OWNER.public_key, 5))),
        decode_revocation,
        PayloadDecodeError,
    ),
    "relay-advert": (
        _payload(encode_relay_advert(ADVERT)),
        decode_relay_advert,
        RelayAdvertDecodeError,
    ),
    "token": (_token_template(), lambda data: decode_token(_token(data)), TokenError),
}


def test_templates_are_valid() -> None:
    """The mutations below start from encodings each decoder accepts."""
    for name, (template, decoder, _) in BYTE_CODECS.items():
        decoder(pack(template))  # raises if the template itself were wrong
        assert paths(template), name


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(BYTE_CODECS)))
    template = BYTE_CODECS[name][0]
    path = draw(st.sampled_from(paths(template)))
    depth = draw(st.one_of(st.integers(1, 40), st.integers(900, 1100), st.just(3000)))
    style = draw(st.sampled_from(["fixarray", "array16", "map"]))
    leaf = draw(st.sampled_from([pack(MARKER), b"\x01", b"\xc0", b"\x90"]))
    return name, pack(replaced(template, path, Raw(nested_bytes(depth, style, leaf))))


@settings(max_examples=400, deadline=None)
@given(mutations())
def test_deep_nesting_in_any_field_is_only_the_decode_error(case: tuple[str, bytes]) -> None:
    name, data = case
    _, decoder, error = BYTE_CODECS[name]
    with pytest.raises(error) as raised:
        decoder(data)
    assert MARKER not in str(raised.value), name


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(BYTE_CODECS)), st.data())
def test_a_peer_string_in_any_field_is_never_quoted(name: str, data: st.DataObject) -> None:
    template, decoder, error = BYTE_CODECS[name]
    path = data.draw(st.sampled_from(paths(template)))
    try:
        decoder(pack(replaced(template, path, MARKER)))
    except error as raised:
        assert MARKER not in str(raised)
    else:  # only where the field is a free string anyway (a revocation's subject)
        assert isinstance(_at(template, path), str)


def _at(value: object, path: tuple[int, ...]) -> object:
    for index in path:
        assert isinstance(value, list)
        value = value[index]
    return value


# The credentials codec gets fields msgpack already decoded inside the DHT frame.
REQUEST = encode_request(signed_request(OWNER, VERIFIER.public_key, bytes(32), 3600, NOW))
REPLY = encode_reply(CredentialsReply(CredentialStatus.ISSUED, "", "u", b"s", 5, "realm"))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([(REQUEST, decode_request), (REPLY, decode_reply)]),
    st.data(),
    st.one_of(st.integers(1, 40), st.integers(990, 1100), st.just(5000)),
)
def test_credentials_fields_nested_deep_are_only_the_decode_error(
    codec: tuple[tuple[object, ...], Callable[[tuple[object, ...]], object]],
    data: st.DataObject,
    depth: int,
) -> None:
    fields, decoder = codec
    decoder(fields)
    index = data.draw(st.integers(0, len(fields) - 1))
    mutated = (*fields[:index], nested_value(depth), *fields[index + 1 :])
    with pytest.raises(CredentialsDecodeError) as raised:
        decoder(mutated)
    assert MARKER not in str(raised.value)


# ----------------------------------------------------------- the helper itself

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(msgpack_values)
def test_nesting_depth_matches_the_value(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    depth = _depth(value)
    assert nesting_depth(data, depth) == depth
    if depth:
        with pytest.raises(MsgpackFramingError):
            nesting_depth(data, depth - 1)
    for cut in range(len(data)):
        with pytest.raises(MsgpackFramingError):
            nesting_depth(data[:cut], 64)
    with pytest.raises(MsgpackFramingError):
        nesting_depth(data + b"\x00", 64)


@given(st.binary(max_size=64))
def test_field_reader_unpack_is_total(data: bytes) -> None:
    class OopsError(ValueError):
        pass

    reader = FieldReader(OopsError)
    with contextlib.suppress(OopsError):
        reader.unpack(data, Limits(max_bytes=64, max_depth=2, max_map=4))


def test_reserved_byte_and_huge_counts_are_refused() -> None:
    for data in (b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\x00\x00"):
        with pytest.raises(MsgpackFramingError):
            nesting_depth(data, 8)

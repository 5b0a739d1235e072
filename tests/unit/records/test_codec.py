"""Record codec: round trips, canonical form, and totality on hostile bytes."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.identity import Identity
from p2pnode.records import (
    MAX_RECORD_BYTES,
    RecordDecodeError,
    RecordKind,
    SignedRecord,
    decode_record,
    record_key,
    sign_record,
    signature_valid,
)

NOW = 1_800_000_000.0
ALICE = Identity.generate(bytes(range(32)))


def make(
    kind: RecordKind = RecordKind.PRESENCE,
    subject: str = "online",
    payload: bytes = b"\x01payload",
    seq: int = 1,
) -> SignedRecord:
    return sign_record(ALICE, kind, subject, payload, seq=seq, now=NOW, ttl=3600)


@pytest.mark.parametrize(
    ("kind", "subject", "payload", "seq"),
    [
        (RecordKind.PRESENCE, "", b"", 0),
        (RecordKind.CONTACT, "main", b"x" * 500, 2**64 - 1),
        (RecordKind.NAME_CLAIM, "alice", b"\x00\xff", 7),
        (RecordKind.RELAY_ADVERT, "relay", b"r", 1),
        (RecordKind.ENUM_ENTRY, "+18009359935", b"naptr", 123456789),
        (RecordKind.REVOCATION, "+18009359935", b"", 1),
        (RecordKind.PRESENCE, "ünïcødé ☎", b"", 1),
    ],
)
def test_round_trip(kind: RecordKind, subject: str, payload: bytes, seq: int) -> None:
    record = make(kind, subject, payload, seq)
    decoded = decode_record(record.encoded)
    assert decoded == record
    assert decoded.encoded == record.encoded
    assert signature_valid(decoded)
    assert decoded.key == record_key(kind, ALICE.public_key, subject)


def test_contested_kinds_share_a_key_across_owners() -> None:
    bob = Identity.generate()
    claim_a = make(RecordKind.NAME_CLAIM, "alice")
    claim_b = sign_record(bob, RecordKind.NAME_CLAIM, "alice", b"", seq=1, now=NOW, ttl=60)
    assert claim_a.key == claim_b.key
    presence_b = sign_record(bob, RecordKind.PRESENCE, "online", b"", seq=1, now=NOW, ttl=60)
    assert presence_b.key != make().key
    assert record_key(RecordKind.NAME_CLAIM, b"", "x") != record_key(
        RecordKind.ENUM_ENTRY, b"", "x"
    )


def test_every_truncation_is_a_decode_error() -> None:
    data = make().encoded
    for cut in range(len(data)):
        with pytest.raises(RecordDecodeError):
            decode_record(data[:cut])


def test_trailing_data_is_a_decode_error() -> None:
    data = make().encoded
    for extra in (b"\x00", b"\xc0", data):
        with pytest.raises(RecordDecodeError):
            decode_record(data + extra)


def test_byte_by_byte_corruption_never_escapes_as_another_error() -> None:
    data = make().encoded
    for index in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            mutated = bytearray(data)
            mutated[index] ^= flip
            try:
                record = decode_record(bytes(mutated))
            except RecordDecodeError:
                continue
            # A mutation that still parses must not still carry a valid signature.
            assert not signature_valid(record)


def fields_of(record: SignedRecord) -> list[object]:
    decoded: list[object] = msgpack.unpackb(record.encoded, raw=False)
    return decoded


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, 2, "version"),
        (1, 99, "unknown record kind"),
        (1, "1", "kind"),
        (2, b"short", "owner"),
        (2, "text", "owner"),
        (3, b"bytes", "subject"),
        (4, -1, "seq"),
        (4, True, "seq"),
        (4, 1.5, "seq"),
        (5, 2**41, "issued_at"),
        (7, "text", "payload"),
        (8, b"x" * 63, "signature"),
    ],
)
def test_ill_typed_fields_are_rejected(index: int, value: object, message: str) -> None:
    fields = fields_of(make())
    fields[index] = value
    with pytest.raises(RecordDecodeError, match=message):
        decode_record(msgpack.packb(fields, use_bin_type=True))


def test_non_canonical_encoding_is_rejected() -> None:
    data = make(seq=1).encoded
    fields = fields_of(make(seq=1))
    # seq=1 written as uint32 instead of a positive fixint: same value, other bytes.
    head = msgpack.packb(fields[:4], use_bin_type=True)[1:]
    tail = msgpack.packb(fields[5:], use_bin_type=True)[1:]
    longer = bytes([0x99]) + head + b"\xce\x00\x00\x00\x01" + tail
    assert msgpack.unpackb(longer, raw=False) == fields
    assert longer != data
    with pytest.raises(RecordDecodeError, match="non-canonical"):
        decode_record(longer)


def test_size_cap() -> None:
    with pytest.raises(ValueError, match="bytes encoded"):
        make(payload=b"x" * MAX_RECORD_BYTES)
    with pytest.raises(RecordDecodeError, match="more than"):
        decode_record(b"\x00" * (MAX_RECORD_BYTES + 1))


def test_sign_record_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ttl"):
        sign_record(ALICE, RecordKind.PRESENCE, "s", b"", seq=1, now=NOW, ttl=0)
    with pytest.raises(ValueError, match="subject"):
        sign_record(ALICE, RecordKind.PRESENCE, "s" * 256, b"", seq=1, now=NOW, ttl=1)


@given(st.binary(max_size=1400))
def test_decode_is_total_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(RecordDecodeError):
        decode_record(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda children: st.lists(children, max_size=10),
    max_leaves=20,
)


@given(st.lists(msgpack_values, min_size=9, max_size=9))
def test_decode_is_total_on_structured_arrays(fields: list[object]) -> None:
    data = msgpack.packb(fields, use_bin_type=True)
    try:
        record = decode_record(data)
    except RecordDecodeError:
        return
    assert record.encoded == data

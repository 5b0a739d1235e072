"""Directory payload codecs and verifier tokens: round trips, canonical form, totality."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.directory.naptr import NaptrDirective, sip_directive
from p2pnode.directory.payloads import (
    MAX_DIRECTIVES,
    Endorsement,
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
    EndorsementToken,
    TokenError,
    add_endorsement,
    decode_token,
    encode_token,
    inspect_claim,
)
from p2pnode.records import RecordKind

from .helpers import NOW, NUMBER, endorse, enum_record, identity


def test_enum_entry_round_trip_is_canonical() -> None:
    owner, verifier = identity(1), identity(2)
    entry = EnumEntry(
        (
            sip_directive("sip:a@pbx.example"),
            NaptrDirective(100, 20, "u", "E2U+voice:sip", "!^\\+(.*)$!sip:\\1@pbx.example!"),
        ),
        (endorse(verifier, owner),),
    )
    data = encode_enum_entry(entry)
    assert decode_enum_entry(data) == entry
    assert encode_enum_entry(decode_enum_entry(data)) == data


def test_name_claim_and_revocation_round_trip() -> None:
    claim = NameClaim((endorse(identity(2), identity(1), "alice", RecordKind.NAME_CLAIM),))
    assert decode_name_claim(encode_name_claim(claim)) == claim
    revocation = Revocation(RecordKind.ENUM_ENTRY, NUMBER, b"\x01" * 32, 5)
    data = encode_revocation(revocation)
    assert decode_revocation(data) == revocation
    assert encode_revocation(decode_revocation(data)) == data
    # one owner per revocation record: the old list form is no revocation
    for bad in (
        [1, int(RecordKind.ENUM_ENTRY), NUMBER, [[b"\x01" * 32, 5]]],
        [1, int(RecordKind.REVOCATION), NUMBER, b"\x01" * 32, 5],
        [1, int(RecordKind.ENUM_ENTRY), NUMBER, b"\x01" * 31, 5],
    ):
        with pytest.raises(PayloadDecodeError):
            decode_revocation(msgpack.packb(bad, use_bin_type=True))


@pytest.mark.parametrize(
    "value",
    [
        [2, []],  # unknown version
        [1],
        [1, [], []],  # no directives
        [1, [[100, 10, "s", "E2U+sip", "!a!b!"]], []],  # flag s
        [1, [[100, 10, "u", "E2U+sip", "!a!\\2!"]], []],  # missing group
        [1, [[70000, 10, "u", "E2U+sip", "!a!b!"]], []],
        [1, [[100, 10, "u", "E2U+sip", "!a!b!"]], [[b"x" * 32, 1, 2]]],
        [1, [[100, 10, "u", "E2U+sip", "!a!b!"]] * (MAX_DIRECTIVES + 1), []],
        [1, [[100.0, 10, "u", "E2U+sip", "!a!b!"]], []],
        [1, [[True, 10, "u", "E2U+sip", "!a!b!"]], []],
        {"a": 1},
    ],
)
def test_bad_enum_entries(value: object) -> None:
    with pytest.raises(PayloadDecodeError):
        decode_enum_entry(msgpack.packb(value, use_bin_type=True))


def test_non_canonical_and_trailing_bytes_refused() -> None:
    data = encode_enum_entry(EnumEntry((sip_directive("sip:a@b"),)))
    with pytest.raises(PayloadDecodeError):
        decode_enum_entry(data + b"\x00")
    # 100 as a uint16 instead of a positive fixint: same value, other bytes
    wide = data.replace(b"\x64\x0a", b"\xcd\x00\x64\x0a", 1)
    assert wide != data
    with pytest.raises(PayloadDecodeError):
        decode_enum_entry(wide)


@given(st.binary(max_size=300))
def test_decoders_are_total(data: bytes) -> None:
    for decode in (decode_enum_entry, decode_name_claim, decode_revocation):
        with contextlib.suppress(PayloadDecodeError):
            decode(data)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=20)
        | st.binary(max_size=70),
        lambda inner: st.lists(inner, max_size=6),
        max_leaves=30,
    )
)
def test_decoders_are_total_on_msgpack_shapes(value: object) -> None:
    data = msgpack.packb([1, value, value], use_bin_type=True)
    for decode in (decode_enum_entry, decode_name_claim, decode_revocation):
        with contextlib.suppress(PayloadDecodeError):
            decode(data)


def test_token_round_trip_and_tamper() -> None:
    owner, verifier = identity(1), identity(2)
    token = EndorsementToken(
        RecordKind.ENUM_ENTRY, NUMBER, owner.public_key, endorse(verifier, owner)
    )
    text = encode_token(token)
    assert decode_token(text) == token
    lifted = EndorsementToken(
        RecordKind.ENUM_ENTRY, NUMBER, identity(3).public_key, token.endorsement
    )
    with pytest.raises(TokenError, match="does not verify"):
        decode_token(encode_token(lifted))
    for bad in ("", "hello", text[:-4], text + "AAAA", "p2pnode-endorsement:!!!"):
        with pytest.raises(TokenError):
            decode_token(bad)


@given(st.text(max_size=200))
def test_token_decoder_is_total(text: str) -> None:
    with contextlib.suppress(TokenError):
        decode_token("p2pnode-endorsement:" + text)


def test_add_endorsement_replaces_same_verifier_and_bounds() -> None:
    owner = identity(1)
    first = endorse(identity(2), owner, now=NOW)
    again = endorse(identity(2), owner, now=NOW + 10)
    assert add_endorsement((first,), again) == (again,)
    many: tuple[Endorsement, ...] = ()
    for n in range(10, 20):
        many = add_endorsement(many, endorse(identity(n), owner, now=NOW + n))
    assert len(many) == 4
    assert {e.issued_at for e in many} == {NOW + n for n in range(16, 20)}


def test_inspect_claim_shows_routes_and_owner() -> None:
    owner = identity(1)
    view = inspect_claim(enum_record(owner, uri="sip:x@y.example"))
    assert view.owner_peer_id == owner.peer_id
    assert view.owner_fingerprint == owner.fingerprint
    assert view.directives[0].uri_for(NUMBER) == "sip:x@y.example"
    assert view.endorsements == ()

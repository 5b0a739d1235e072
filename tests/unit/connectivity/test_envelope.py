"""Sealed envelopes and the replay window: confidentiality, authenticity, tamper, replay."""

from __future__ import annotations

import msgpack
import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.connectivity.envelope import (
    MAX_ENVELOPE_BYTES,
    MAX_PAYLOAD_BYTES,
    EnvelopeDecodeError,
    decode_inner,
    envelope_recipient,
    open_envelope,
    seal_envelope,
)
from p2pnode.connectivity.replay import ReplayVerdict, ReplayWindow
from p2pnode.identity import Identity

ALICE = Identity.generate(b"a" * 32)
BOB = Identity.generate(b"b" * 32)
CAROL = Identity.generate(b"c" * 32)
NOW = 1_800_000_000.0
ID = bytes(range(16))


def _seal(payload: bytes = b"v=0 offer", sender: Identity = ALICE) -> bytes:
    return seal_envelope(sender, BOB.public_key, payload, envelope_id=ID, now=NOW)


@pytest.mark.parametrize("payload", [b"", b"x", b"offer" * 100, bytes(MAX_PAYLOAD_BYTES)])
def test_round_trip(payload: bytes) -> None:
    envelope = _seal(payload)
    assert len(envelope) <= MAX_ENVELOPE_BYTES
    assert envelope_recipient(envelope) == BOB.public_key
    opened = open_envelope(envelope, BOB)
    assert opened.sender == ALICE.public_key
    assert opened.payload == payload
    assert opened.envelope_id == ID
    assert opened.timestamp_ms == int(NOW * 1000)


def test_the_channel_is_sealed_and_signed() -> None:
    envelope = seal_envelope(
        ALICE, BOB.public_key, b"offer", envelope_id=ID, now=NOW, channel="link"
    )
    assert open_envelope(envelope, BOB).channel == "link"
    assert open_envelope(_seal(), BOB).channel == ""
    # Bob's own re-seal of alice's signed content under another channel does not verify.
    inner = nacl.public.SealedBox(BOB.x25519_private_key()).decrypt(envelope[32:])
    fields = msgpack.unpackb(inner)
    fields[4] = "chat"
    with pytest.raises(EnvelopeDecodeError, match="signature"):
        open_envelope(_reseal(fields), BOB)
    with pytest.raises(ValueError, match="channel"):
        seal_envelope(ALICE, BOB.public_key, b"", envelope_id=ID, now=NOW, channel="x" * 17)


def test_payload_over_the_bound_is_refused_at_sealing() -> None:
    with pytest.raises(ValueError, match="more than"):
        _seal(bytes(MAX_PAYLOAD_BYTES + 1))


def test_the_home_sees_neither_sender_nor_payload() -> None:
    envelope = _seal(b"secret-offer-text")
    assert b"secret-offer-text" not in envelope
    assert ALICE.public_key not in envelope


def test_only_the_recipient_opens_it() -> None:
    envelope = _seal()
    with pytest.raises(EnvelopeDecodeError, match="another key"):
        open_envelope(envelope, CAROL)
    # Re-addressed to carol (the home rewrites the visible recipient): the box does not open.
    with pytest.raises(EnvelopeDecodeError, match="does not open"):
        open_envelope(CAROL.public_key + envelope[32:], CAROL)


def test_every_single_byte_change_is_refused() -> None:
    envelope = _seal(b"tamper me")
    for index in range(len(envelope)):
        altered = bytearray(envelope)
        altered[index] ^= 0x01
        with pytest.raises(EnvelopeDecodeError):
            open_envelope(bytes(altered), BOB)


def test_truncated_and_extended_envelopes_are_refused() -> None:
    envelope = _seal()
    for cut in range(len(envelope)):
        with pytest.raises(EnvelopeDecodeError):
            open_envelope(envelope[:cut], BOB)
    with pytest.raises(EnvelopeDecodeError):
        open_envelope(envelope + b"\0", BOB)


def _reseal(inner_fields: list[object]) -> bytes:
    """A well-sealed envelope to bob around an inner part we forge."""
    inner = msgpack.packb(inner_fields, use_bin_type=True)
    box = nacl.public.SealedBox(BOB.x25519_private_key().public_key)
    return BOB.public_key + box.encrypt(inner)


def test_a_sealed_envelope_with_a_forged_sender_is_refused() -> None:
    # Carol seals to bob but claims alice's key, with her own signature.
    signature = CAROL.sign(b"anything")
    forged = _reseal([1, ALICE.public_key, ID, int(NOW * 1000), "", b"hi", signature])
    with pytest.raises(EnvelopeDecodeError, match="signature"):
        open_envelope(forged, BOB)


def test_a_signature_for_another_recipient_does_not_transfer() -> None:
    # Bob opens alice's envelope and re-seals its signed inner part to carol.
    inner = nacl.public.SealedBox(BOB.x25519_private_key()).decrypt(_seal()[32:])
    box = nacl.public.SealedBox(CAROL.x25519_private_key().public_key)
    with pytest.raises(EnvelopeDecodeError, match="signature"):
        open_envelope(CAROL.public_key + box.encrypt(inner), CAROL)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([2, ALICE.public_key, ID, 1, "", b"", bytes(64)], "version"),
        ([1, b"short", ID, 1, "", b"", bytes(64)], "sender"),
        ([1, ALICE.public_key, b"id", 1, "", b"", bytes(64)], "id"),
        ([1, ALICE.public_key, ID, -1, "", b"", bytes(64)], "timestamp"),
        ([1, ALICE.public_key, ID, 1, b"c", b"", bytes(64)], "channel"),
        ([1, ALICE.public_key, ID, 1, "é", b"", bytes(64)], "channel"),
        ([1, ALICE.public_key, ID, 1, "c" * 17, b"", bytes(64)], "msgpack"),
        ([1, ALICE.public_key, ID, 1, "", "text", bytes(64)], "payload"),
        ([1, ALICE.public_key, ID, 1, "", 7, bytes(64)], "payload"),
        ([1, ALICE.public_key, ID, 1, "", b"", bytes(63)], "signature"),
        ([1, ALICE.public_key, ID, 1, "", b""], "7 fields"),
        ({"a": 1}, "msgpack|7 fields"),
    ],
)
def test_inner_table(fields: object, reason: str) -> None:
    with pytest.raises(EnvelopeDecodeError, match=reason):
        decode_inner(msgpack.packb(fields, use_bin_type=True), BOB.public_key)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_inner_decoder_is_total(data: bytes) -> None:
    with pytest.raises(EnvelopeDecodeError):
        decode_inner(data, BOB.public_key)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_open_is_total(data: bytes) -> None:
    with pytest.raises(EnvelopeDecodeError):
        open_envelope(BOB.public_key + data, BOB)


# -- replay window ---------------------------------------------------------------------------


def test_replay_is_refused_and_fresh_ids_pass() -> None:
    window = ReplayWindow(window=60, skew=10)
    sender = ALICE.public_key
    assert window.check(sender, ID, NOW, NOW) is ReplayVerdict.FRESH
    assert window.check(sender, ID, NOW, NOW + 1) is ReplayVerdict.REPLAYED
    assert window.check(CAROL.public_key, ID, NOW, NOW + 1) is ReplayVerdict.FRESH
    assert window.check(sender, b"x" * 16, NOW, NOW + 1) is ReplayVerdict.FRESH


def test_old_and_future_envelopes_are_refused() -> None:
    window = ReplayWindow(window=60, skew=10)
    assert window.check(b"s", ID, NOW - 61, NOW) is ReplayVerdict.TOO_OLD
    assert window.check(b"s", ID, NOW + 11, NOW) is ReplayVerdict.FUTURE
    assert window.check(b"s", ID, NOW + 9, NOW) is ReplayVerdict.FRESH


def test_an_id_outlives_its_window_only_as_too_old() -> None:
    window = ReplayWindow(window=60, skew=10)
    assert window.check(b"s", ID, NOW, NOW) is ReplayVerdict.FRESH
    assert len(window) == 1
    # After the window it is forgotten, and refused as too old instead.
    assert window.check(b"s", ID, NOW, NOW + 61) is ReplayVerdict.TOO_OLD
    assert len(window) == 0


def test_a_full_window_raises_its_floor_and_never_reopens_a_replay() -> None:
    window = ReplayWindow(window=60, skew=10, capacity=4)
    for i in range(4):
        assert window.check(b"s", bytes([i]) * 16, NOW + i, NOW + 5) is ReplayVerdict.FRESH
    assert window.check(b"s", b"n" * 16, NOW + 4, NOW + 5) is ReplayVerdict.FRESH
    assert len(window) == 4
    assert window.floor == NOW
    # The forgotten id cannot come back.
    assert window.check(b"s", bytes([0]) * 16, NOW, NOW + 5) is ReplayVerdict.TOO_OLD


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-20, 40, allow_nan=False), min_size=8, max_size=8),
    st.lists(st.integers(0, 7), min_size=1, max_size=60),
    st.integers(1, 8),
)
def test_window_accepts_each_envelope_at_most_once_and_stays_bounded(
    sealed_at: list[float], arrivals: list[int], capacity: int
) -> None:
    """An envelope is (id, timestamp) under the sender's signature: replays repeat both."""
    window = ReplayWindow(window=30, skew=5, capacity=capacity)
    accepted: set[int] = set()
    for step, ident in enumerate(arrivals):
        now = NOW + step * 0.5
        verdict = window.check(b"s", bytes([ident]) * 16, NOW + sealed_at[ident], now)
        if verdict is ReplayVerdict.FRESH:
            assert ident not in accepted
            accepted.add(ident)
        assert len(window) <= capacity

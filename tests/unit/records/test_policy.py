"""The acceptance function: every rule, each able to fail."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.identity import Identity
from p2pnode.records import (
    MAX_CLOCK_SKEW,
    MAX_TTL_BY_KIND,
    Accepted,
    RecordKind,
    Rejected,
    RejectReason,
    SignedRecord,
    accept,
    sign_record,
    supersedes,
)

NOW = 1_800_000_000.0
ALICE = Identity.generate(bytes(range(32)))
MALLORY = Identity.generate(bytes(range(1, 33)))


def make(
    identity: Identity = ALICE,
    *,
    seq: int = 5,
    payload: bytes = b"v1",
    now: float = NOW,
    ttl: int = 3600,
    kind: RecordKind = RecordKind.CONTACT,
    subject: str = "main",
) -> SignedRecord:
    return sign_record(identity, kind, subject, payload, seq=seq, now=now, ttl=ttl)


def rejected(verdict: Accepted | Rejected) -> RejectReason:
    assert isinstance(verdict, Rejected), verdict
    return verdict.reason


def test_fresh_valid_record_is_accepted() -> None:
    record = make()
    verdict = accept(record, None, record.key, NOW)
    assert verdict == Accepted(record=record, duplicate=False)


def test_forged_signature_is_rejected() -> None:
    record = make()
    forged = dataclasses.replace(record, payload=b"evil")
    assert rejected(accept(forged, None, forged.key, NOW)) is RejectReason.BAD_SIGNATURE


def test_record_resigned_by_another_key_does_not_land_under_the_victims_key() -> None:
    victim = make()
    resigned = make(MALLORY)  # same kind and subject, Mallory's key
    assert rejected(accept(resigned, None, victim.key, NOW)) is RejectReason.KEY_MISMATCH
    # Claiming the victim's key as owner while signing with Mallory's fails the signature.
    spoofed = dataclasses.replace(resigned, owner=ALICE.public_key)
    assert rejected(accept(spoofed, None, victim.key, NOW)) is RejectReason.BAD_SIGNATURE


def test_expired_and_future_records_are_rejected() -> None:
    record = make(ttl=60)
    assert rejected(accept(record, None, record.key, NOW + 60)) is RejectReason.EXPIRED
    assert isinstance(accept(record, None, record.key, NOW + 59), Accepted)
    future = make(now=NOW + MAX_CLOCK_SKEW + 1)
    assert rejected(accept(future, None, future.key, NOW)) is RejectReason.FROM_FUTURE
    skewed = make(now=NOW + MAX_CLOCK_SKEW)
    assert isinstance(accept(skewed, None, skewed.key, NOW), Accepted)


def test_lifetime_is_capped_per_kind() -> None:
    limit = MAX_TTL_BY_KIND[RecordKind.PRESENCE]
    ok = make(kind=RecordKind.PRESENCE, ttl=limit)
    assert isinstance(accept(ok, None, ok.key, NOW), Accepted)
    too_long = make(kind=RecordKind.PRESENCE, ttl=limit + 1)
    assert rejected(accept(too_long, None, too_long.key, NOW)) is RejectReason.TTL_TOO_LONG


def test_sequence_must_strictly_increase() -> None:
    stored = make(seq=5)
    newer = make(seq=6, payload=b"v2")
    assert accept(newer, stored, stored.key, NOW) == Accepted(record=newer, duplicate=False)
    older = make(seq=4, payload=b"v0")
    assert rejected(accept(older, stored, stored.key, NOW)) is RejectReason.ROLLBACK
    reused = make(seq=5, payload=b"other")
    low, high = sorted((stored, reused), key=lambda r: r.encoded)
    assert rejected(accept(low, high, high.key, NOW)) is RejectReason.SEQ_REUSED
    assert accept(high, low, low.key, NOW) == Accepted(record=high, duplicate=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=2, max_size=6, unique=True), st.randoms())
def test_equal_seq_equivocation_converges_whatever_the_arrival_order(
    payloads: list[bytes], rng: random.Random
) -> None:
    """Issue 10, finding 5: two records of one owner with one seq once split the network
    (first seen won). Every storing node and reader now ends on the same one."""
    versions = [make(seq=7, payload=p) for p in payloads]
    winners: set[bytes] = set()
    for _ in range(4):
        order = list(versions)
        rng.shuffle(order)
        held = order[0]
        for record in order[1:]:
            verdict = accept(record, held, held.key, NOW)
            if isinstance(verdict, Accepted):
                held = verdict.record
            assert supersedes(held, record) or held == record
        winners.add(held.encoded)
    assert winners == {max(v.encoded for v in versions)}


def test_identical_record_is_a_duplicate_not_an_update() -> None:
    stored = make()
    again = make()
    assert again.encoded == stored.encoded
    assert accept(again, stored, stored.key, NOW) == Accepted(record=stored, duplicate=True)


def test_stored_record_of_another_owner_is_not_comparable() -> None:
    mine = make(kind=RecordKind.NAME_CLAIM, subject="alice")
    theirs = make(MALLORY, kind=RecordKind.NAME_CLAIM, subject="alice", seq=99)
    assert mine.key == theirs.key
    assert rejected(accept(mine, theirs, mine.key, NOW)) is RejectReason.OWNER_MISMATCH


def test_oversized_record_is_rejected_before_anything_else() -> None:
    record = make()
    huge = dataclasses.replace(record, payload=b"x" * 2000)
    assert rejected(accept(huge, None, record.key, NOW)) is RejectReason.TOO_LARGE


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reason_has_a_wire_name(reason: RejectReason) -> None:
    assert reason.value and reason.value == reason.value.lower()

"""The record store admits only what accept() accepts, and bounds what peers make it hold."""

from __future__ import annotations

import dataclasses

import pytest

from p2pnode.dht.storage import RecordStore, StoreLimit
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, RejectReason, SignedRecord, sign_record

NOW = 1_700_000_000.0
ALICE = Identity.generate(b"a" * 32)
MALLORY = Identity.generate(b"m" * 32)


def presence(
    identity: Identity, seq: int, *, ttl: int = 3600, payload: bytes = b"hi"
) -> SignedRecord:
    return sign_record(identity, RecordKind.PRESENCE, "online", payload, seq=seq, now=NOW, ttl=ttl)


def claim(identity: Identity, *, ttl: int, name: str = "alice") -> SignedRecord:
    return sign_record(identity, RecordKind.NAME_CLAIM, name, b"", seq=1, now=NOW, ttl=ttl)


def test_newest_seq_wins_and_rollback_is_refused() -> None:
    store = RecordStore()
    first, second = presence(ALICE, 1), presence(ALICE, 2)
    assert store.offer(first, first.key, NOW).stored
    assert store.offer(second, second.key, NOW).stored
    outcome = store.offer(first, first.key, NOW)
    assert not outcome.stored and outcome.reason == RejectReason.ROLLBACK.value
    assert store.get(first.key, NOW) == [second]
    assert store.offer(second, second.key, NOW).duplicate
    other = presence(ALICE, 2, payload=b"other")
    assert store.offer(other, other.key, NOW).reason == RejectReason.SEQ_REUSED.value
    assert len(store) == 1 and store.bytes_used == len(second.encoded)


def test_forged_and_rekeyed_records_are_refused() -> None:
    store = RecordStore()
    genuine = presence(ALICE, 5)
    forged = dataclasses.replace(genuine, payload=b"evil")
    assert store.offer(forged, forged.key, NOW).reason == RejectReason.BAD_SIGNATURE.value
    resigned = dataclasses.replace(
        presence(MALLORY, 9), owner=ALICE.public_key
    )  # Mallory's signature claimed as Alice's
    assert store.offer(resigned, genuine.key, NOW).reason == RejectReason.BAD_SIGNATURE.value
    mallory = presence(MALLORY, 9)
    assert store.offer(mallory, genuine.key, NOW).reason == RejectReason.KEY_MISMATCH.value
    assert len(store) == 0
    assert store.rejects[RejectReason.BAD_SIGNATURE.value] == 2


def test_expiry_is_honoured() -> None:
    store = RecordStore()
    record = presence(ALICE, 1, ttl=60)
    assert store.offer(record, record.key, NOW).stored
    assert store.get(record.key, NOW + 59) == [record]
    assert store.get(record.key, NOW + 60) == []
    assert store.purge(NOW + 61) == 1
    assert len(store) == 0 and store.bytes_used == 0
    assert store.offer(record, record.key, NOW + 61).reason == RejectReason.EXPIRED.value


def test_contested_key_keeps_several_owners_up_to_the_cap() -> None:
    store = RecordStore(per_key_cap=3)
    owners = [Identity.generate(bytes([i]) * 32) for i in range(3)]
    claims = [claim(owner, ttl=1000 + i) for i, owner in enumerate(owners)]
    key = claims[0].key
    for record in claims:
        assert store.offer(record, key, NOW).stored
    assert len(store.get(key, NOW)) == 3
    short = claim(MALLORY, ttl=500)
    outcome = store.offer(short, key, NOW)
    assert not outcome.stored and outcome.reason == StoreLimit.KEY_FULL.value
    long = claim(MALLORY, ttl=5000)
    assert store.offer(long, key, NOW).stored  # evicts the claim expiring first
    held = store.get(key, NOW)
    assert long in held and claims[0] not in held and len(held) == 3
    assert held[0] == long  # latest expiring first


def test_total_bytes_are_bounded() -> None:
    one = presence(ALICE, 1)
    store = RecordStore(max_bytes=len(one.encoded) + 10)
    assert store.offer(one, one.key, NOW).stored
    other = presence(MALLORY, 1)
    outcome = store.offer(other, other.key, NOW)
    assert outcome.reason == StoreLimit.STORE_FULL.value
    newer = presence(ALICE, 2)
    assert store.offer(newer, newer.key, NOW).stored  # replacing one's own fits


@pytest.mark.parametrize("ttl", [1, 86400])
def test_items_lists_what_is_held(ttl: int) -> None:
    store = RecordStore()
    record = presence(ALICE, 1, ttl=ttl)
    store.offer(record, record.key, NOW)
    assert list(store.items()) == [(record.key, record)]
    assert store.held(record.key, ALICE.public_key) == record

"""The record store admits only what accept() accepts, and bounds what peers make it hold."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.dht.storage import RecordStore, StoreLimit, network_of
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
    low, high = sorted((second, other), key=lambda r: r.encoded)
    if low is other:  # equal seq: only the greater bytes replace (issue 10 finding 5)
        assert store.offer(other, other.key, NOW).reason == RejectReason.SEQ_REUSED.value
    else:
        assert store.offer(other, other.key, NOW).stored
        assert store.offer(second, second.key, NOW).reason == RejectReason.SEQ_REUSED.value
    assert store.get(first.key, NOW) == [high]
    assert len(store) == 1 and store.bytes_used == len(high.encoded)


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
        assert store.offer(record, key, NOW, source="192.0.2.1").stored
    assert len(store.get(key, NOW)) == 3
    # full, and no network holds two more than the newcomer's: refused, whatever its lifetime
    long = claim(MALLORY, ttl=5000)
    outcome = store.offer(long, key, NOW, source="192.0.2.9")
    assert not outcome.stored and outcome.reason == StoreLimit.KEY_FULL.value
    # a newcomer from another network evicts from the crowded one (all arrived at
    # once here, so the shortest-lived goes)
    assert store.offer(long, key, NOW, source="198.51.100.1").stored
    held = store.get(key, NOW)
    assert long in held and claims[0] not in held and len(held) == 3


# ---------------------------------------------------- issue 10, finding 2: squatters

SQUATTERS = [Identity.generate(bytes([100 + i]) * 32) for i in range(40)]
SKEW = 290  # inside MAX_CLOCK_SKEW: accepted, and once outlived every honest claim
MONTH = 30 * 86400


def squat(identity: Identity, name: str = "alice") -> SignedRecord:
    return sign_record(identity, RecordKind.NAME_CLAIM, name, b"", seq=1, now=NOW + SKEW, ttl=MONTH)


SQUATS = [squat(identity) for identity in SQUATTERS]
OWNER_CLAIM = claim(ALICE, ttl=MONTH)
KEY = OWNER_CLAIM.key
OWNER_IP = "203.0.113.7"


def owner_store() -> RecordStore:
    store = RecordStore()
    assert store.offer(OWNER_CLAIM, KEY, NOW, source=OWNER_IP, sender=ALICE.public_key).stored
    return store


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.9.9.9"],  # one address
        [f"10.9.9.{i}" for i in range(1, 41)],  # forty addresses of one /24
        [f"10.{i // 2}.0.1" for i in range(30)],  # fifteen networks, two each
        [f"10.{i}.0.1" for i in range(15)],  # fifteen networks, one each
    ],
)
def test_future_dated_squatters_from_few_networks_never_evict_the_owner(
    addresses: list[str],
) -> None:
    """Once 16 squatter claims from one host, issued 290 s ahead with 30-day
    lifetimes, pushed the owner's claim out (key-full evicted the earliest expiry)."""
    store = owner_store()
    for index, record in enumerate(SQUATS):
        store.offer(record, KEY, NOW, source=addresses[index % len(addresses)])
    held = store.get(KEY, NOW)
    assert OWNER_CLAIM in held
    assert len(held) <= store.per_key_cap
    assert store.network(KEY, ALICE.public_key) == "203.0.113.0/24"


def test_an_owner_arriving_after_squatters_gets_in_unless_16_networks_hold_one_each() -> None:
    store = RecordStore()
    for index, record in enumerate(SQUATS[:16]):  # eight networks, two claims each
        assert store.offer(record, KEY, NOW, source=f"10.{index // 2}.0.1").stored
    assert store.offer(OWNER_CLAIM, KEY, NOW, source=OWNER_IP).stored
    assert OWNER_CLAIM in store.get(KEY, NOW)
    # the stated bound: sixteen distinct networks holding one claim each lock a key
    full = RecordStore()
    for index, record in enumerate(SQUATS[:16]):
        assert full.offer(record, KEY, NOW, source=f"10.{index}.0.1").stored
    outcome = full.offer(OWNER_CLAIM, KEY, NOW, source=OWNER_IP)
    assert outcome.reason == StoreLimit.KEY_FULL.value


def test_the_owner_can_always_republish_into_a_full_key() -> None:
    store = owner_store()
    for index, record in enumerate(SQUATS[:15]):
        assert store.offer(record, KEY, NOW, source=f"10.{index}.0.1").stored
    newer = sign_record(ALICE, RecordKind.NAME_CLAIM, "alice", b"v2", seq=2, now=NOW, ttl=MONTH)
    assert store.offer(newer, KEY, NOW + 1, source=OWNER_IP, sender=ALICE.public_key).stored
    assert newer in store.get(KEY, NOW + 1)


def test_a_replicated_claim_moves_to_its_owners_network_when_the_owner_stores_it() -> None:
    """A replicating node charges its own network; the owner's own STORE (even a
    duplicate) re-charges the claim to the owner's network, a third party's never does."""
    replicator = "198.51.100.5"
    store = RecordStore()
    for record in SQUATS[:15]:
        store.offer(record, KEY, NOW, source=replicator)
    store.offer(OWNER_CLAIM, KEY, NOW, source=replicator)
    assert store.network(KEY, ALICE.public_key) == "198.51.100.0/24"
    store.offer(OWNER_CLAIM, KEY, NOW, source="10.66.0.1", sender=SQUATTERS[0].public_key)
    assert store.network(KEY, ALICE.public_key) == "198.51.100.0/24"
    assert store.offer(OWNER_CLAIM, KEY, NOW, source=OWNER_IP, sender=ALICE.public_key).duplicate
    assert store.network(KEY, ALICE.public_key) == "203.0.113.0/24"
    for index, record in enumerate(SQUATS[15:]):
        store.offer(record, KEY, NOW, source=f"10.{index}.0.1")
    assert OWNER_CLAIM in store.get(KEY, NOW)


def test_inside_a_network_the_last_arrival_goes_first_not_the_earliest_expiry() -> None:
    store = RecordStore(per_key_cap=4)
    shared = "192.0.2.1"  # an owner behind the same NAT as a squatter
    assert store.offer(OWNER_CLAIM, KEY, NOW, source=shared).stored
    for record in SQUATS[:3]:
        assert store.offer(record, KEY, NOW + 10, source=shared).stored
    assert store.offer(SQUATS[3], KEY, NOW + 20, source="10.1.0.1").stored
    held = store.get(KEY, NOW + 20)
    assert OWNER_CLAIM in held and SQUATS[3] in held
    assert len([r for r in SQUATS[:3] if r in held]) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 39), st.integers(0, 14)), max_size=120))
def test_no_sequence_from_fewer_than_16_networks_evicts_the_owner(
    offers: list[tuple[int, int]],
) -> None:
    store = owner_store()
    for squatter, network in offers:
        store.offer(SQUATS[squatter], KEY, NOW, source=f"10.{network}.{squatter}.1")
        assert store.held(KEY, ALICE.public_key) == OWNER_CLAIM


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


def test_pages_list_the_longest_held_first() -> None:
    """A reader's first VALUE page starts with the incumbent owner, not with the
    squatters' far-future claims (which sorted first by expiry)."""
    store = owner_store()
    for index, record in enumerate(SQUATS[:10]):
        store.offer(record, KEY, NOW + 1 + index, source=f"10.{index}.0.1")
    held = store.get(KEY, NOW + 20)
    assert held[0] == OWNER_CLAIM
    assert held[1:] == SQUATS[:10]


def test_networks_are_prefixes_of_the_source_address() -> None:
    assert network_of("192.0.2.77", 24, 48) == "192.0.2.0/24"
    assert network_of("::ffff:192.0.2.77", 24, 48) == "192.0.2.0/24"  # IPv4-mapped
    assert network_of("2001:db8:1:2::5", 24, 48) == "2001:db8:1::/48"
    assert network_of("127.0.3.1", 32, 128) == "127.0.3.1/32"
    assert network_of("not-an-ip", 24, 48) != network_of("other", 24, 48)
    with pytest.raises(ValueError, match="prefixes"):
        RecordStore(prefix_v4=33)

"""k-buckets: the closest search is exact (brute force comparison), LRU and replacements work."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.dht.keys import Contact, bucket_index, distance, id_to_int
from p2pnode.dht.routing import (
    MAX_FAILURES,
    REPLACEMENT_CACHE_SIZE,
    OfferOutcome,
    RoutingTable,
)

ids = st.binary(min_size=20, max_size=20)


def contact(node_id: bytes, port: int = 1) -> Contact:
    return Contact(node_id, b"k" * 32, ("127.0.0.1", port))


def near(own: bytes, bucket: int, n: int) -> bytes:
    """An id in ``bucket`` of ``own`` (distance 2**bucket + n)."""
    return (id_to_int(own) ^ ((1 << bucket) + n)).to_bytes(20, "big")


@given(own=ids, others=st.lists(ids, max_size=150, unique=True), target=ids, k=st.integers(1, 8))
def test_closest_matches_brute_force(
    own: bytes, others: list[bytes], target: bytes, k: int
) -> None:
    table = RoutingTable(own, k=k)
    for node_id in others:
        table.offer(contact(node_id), 0.0)
    held = [c.node_id for c in table.contacts()]
    for count in (1, 3, k, 20, 500):
        found = [c.node_id for c in table.closest(target, count)]
        expected = sorted(held, key=lambda n: distance(n, target))[:count]
        assert found == expected
        assert len(found) == min(count, len(held))  # never fewer than available


@given(own=ids, others=st.lists(ids, min_size=1, max_size=60, unique=True), target=ids)
def test_closest_with_exclusion(own: bytes, others: list[bytes], target: bytes) -> None:
    table = RoutingTable(own, k=20)
    for node_id in others:
        table.offer(contact(node_id), 0.0)
    held = [c.node_id for c in table.contacts()]
    excluded = frozenset(held[::2])
    found = [c.node_id for c in table.closest(target, 20, excluded)]
    rest = sorted((n for n in held if n not in excluded), key=lambda n: distance(n, target))
    assert found == rest[:20]


@given(own=ids, target=ids)
def test_closest_to_ourselves_and_empty(own: bytes, target: bytes) -> None:
    table = RoutingTable(own)
    assert table.closest(target, 20) == []
    assert table.offer(contact(own), 0.0).outcome is OfferOutcome.SELF
    assert len(table) == 0


def test_full_bucket_parks_replacements_and_names_the_oldest() -> None:
    own = bytes(20)
    table = RoutingTable(own, k=3)
    members = [contact(near(own, 10, n)) for n in range(3)]
    for member in members:
        assert table.offer(member, 0.0).outcome is OfferOutcome.ADDED
    newcomer = contact(near(own, 10, 50))
    result = table.offer(newcomer, 1.0)
    assert result.outcome is OfferOutcome.REPLACEMENT
    assert result.check == members[0]  # least recently seen first
    assert newcomer.node_id not in table
    # The oldest answers: it becomes most recent, the next liveness check names another.
    table.record_success(members[0].node_id, 2.0)
    assert table.offer(contact(near(own, 10, 51)), 2.0).check == members[1]
    # The oldest fails: it is evicted and the most recent replacement takes its place.
    assert table.record_failure(members[1].node_id, 3.0)
    assert members[1].node_id not in table
    assert near(own, 10, 51) in table
    assert len(table) == 3


def test_failure_without_replacement_needs_repeats() -> None:
    own = bytes(20)
    table = RoutingTable(own, k=3)
    member = contact(near(own, 5, 0))
    table.offer(member, 0.0)
    for _ in range(MAX_FAILURES - 1):
        assert not table.record_failure(member.node_id, 1.0)
    assert table.record_failure(member.node_id, 1.0)
    assert len(table) == 0


def test_replacement_cache_is_bounded() -> None:
    own = bytes(20)
    table = RoutingTable(own, k=1)
    table.offer(contact(near(own, 20, 0)), 0.0)
    for n in range(1, 50):
        table.offer(contact(near(own, 20, n)), 0.0)
    assert table.health().replacements == REPLACEMENT_CACHE_SIZE
    assert not table.wants(near(own, 20, 99))
    assert table.wants(near(own, 21, 0))


def test_updated_address_and_added_since() -> None:
    own = bytes(20)
    table = RoutingTable(own)
    node_id = near(own, 30, 1)
    table.offer(contact(node_id, port=1), 5.0)
    assert table.offer(contact(node_id, port=2), 6.0).outcome is OfferOutcome.UPDATED
    found = table.get(node_id)
    assert found is not None and found.address == ("127.0.0.1", 2)
    assert table.added_since(4.0) == {node_id: 5.0}
    assert table.added_since(5.0) == {}
    assert bucket_index(id_to_int(own), id_to_int(node_id)) == 30

"""Address diversity limits: per bucket, per reply, per lookup result; loopback exempt."""

from __future__ import annotations

import pytest

from p2pnode.dht.config import DhtConfig
from p2pnode.dht.diversity import Diversity
from p2pnode.dht.keys import Contact, node_id_of
from p2pnode.dht.lookup import Lookup, LookupKind
from p2pnode.dht.routing import OfferOutcome, RoutingTable
from p2pnode.identity import Identity

OWN = bytes(20)


def contact(host: str, n: int) -> Contact:
    key = Identity.generate(n.to_bytes(32, "big")).public_key
    return Contact(node_id_of(key), key, (host, 1000 + n))


def limits(**overrides: object) -> Diversity:
    overrides.setdefault("id_difficulty", 0)  # the ids here are not ground
    return DhtConfig(**overrides).diversity()  # type: ignore[arg-type]


def test_groups_by_address_and_network() -> None:
    diversity = limits()
    a, b = contact("192.0.2.1", 1), contact("192.0.2.200", 2)
    ga, gb = diversity.groups(a), diversity.groups(b)
    assert ga is not None and gb is not None
    assert ga.address != gb.address and ga.network == gb.network == "192.0.2.0/24"
    v6 = diversity.groups(contact("2001:db8:1:2::5", 3))
    assert v6 is not None and v6.network == "2001:db8:1::/48"
    mapped = diversity.groups(contact("::ffff:192.0.2.9", 4))
    assert mapped is not None and mapped.network == "192.0.2.0/24"
    assert diversity.groups(contact("127.0.0.1", 5)) is None
    assert limits(diverse_loopback=True).groups(contact("127.0.0.1", 5)) is not None


def test_pick_keeps_the_nearest_within_limits() -> None:
    diversity = limits(max_per_address=2, max_per_network=3)
    crowd = [contact("198.51.100.7", n) for n in range(5)]
    neighbours = [contact(f"198.51.100.{n}", 10 + n) for n in range(1, 4)]
    others = [contact(f"203.0.{n}.1", 20 + n) for n in range(10)]
    picked = diversity.pick([*crowd, *neighbours, *others], 8)
    assert picked[:2] == crowd[:2]  # two of the one address
    assert picked[2] == neighbours[0]  # a third of the /24, then the network is full
    assert picked[3:] == others[:5]


@pytest.mark.parametrize("host", ["198.51.100.7", "127.0.0.1"])
def test_a_bucket_takes_at_most_its_share_of_one_address(host: str) -> None:
    table = RoutingTable(OWN, k=20, diversity=limits())
    outcomes = [table.offer(contact(host, n), 0.0).outcome for n in range(30)]
    added = outcomes.count(OfferOutcome.ADDED)
    if host.startswith("127."):
        assert OfferOutcome.REFUSED not in outcomes  # loopback is exempt by default
    else:
        # at most 2 per address in each bucket; ids spread over a few buckets
        buckets_used = table.health().buckets_used
        assert added <= 2 * buckets_used
        assert OfferOutcome.REFUSED in outcomes
        assert table.refused == outcomes.count(OfferOutcome.REFUSED)


def test_a_lookup_settles_on_diverse_nodes() -> None:
    target = bytes(20)
    crowd = [contact("198.51.100.7", n) for n in range(20)]
    honest = [contact(f"203.0.{n}.1", 100 + n) for n in range(20)]
    # The crowd is nearest the target, as ground ids would be.
    crowd.sort(key=lambda c: c.id_int)
    lookup = Lookup(
        target,
        LookupKind.NODE,
        own_id=b"\xff" * 20,
        k=8,
        alpha=3,
        quorum=3,
        seeds=[*crowd, *honest],
        diversity=limits(),
    )
    while not lookup.done:
        for picked in lookup.next_queries():
            lookup.on_reply(picked.node_id, [], has_value=False)
    settled = lookup.closest_answered()
    assert len(settled) == 8
    assert sum(c.address[0] == "198.51.100.7" for c in settled) <= 2

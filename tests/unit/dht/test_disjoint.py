"""Disjoint lookup paths (S/Kademlia) against a crowd of ground ids from many networks.

The diversity limits (``test_eclipse.py``) stop a crowd from one address or one /24;
from 5 or more networks (4 ids each) a crowd fills all k = 20 closest slots of a
single lookup. Here a crowd from 6 networks crowds a key whose record honest nodes
hold: a single-path get misses it from some readers, a get over 2 disjoint paths
finds it from at least 9 of 10. The bound is tested too: a crowd must fill the k
closest of *every* path, so 10 networks (40 ids) beat 2 paths and not 3. A put
made after the crowd came lands on it, unless it too takes disjoint paths
(``disjoint_puts``) and stores at each path's k closest.

First the state machine alone (``DisjointLookup`` with scripted replies), then whole
cores in virtual time (``memnet``) with colluding sybils (``sybils.py``).
"""

from __future__ import annotations

import functools
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.dht.config import DhtConfig, GetResult, PutResult
from p2pnode.dht.disjoint import DisjointLookup, make_lookup
from p2pnode.dht.keys import Contact
from p2pnode.dht.lookup import Lookup, LookupKind
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, sign_record
from tests.unit.dht.memnet import MemNet
from tests.unit.dht.sybils import add_sybils, grind, join

K = 20
TARGET = bytes(20)
OWN = b"\xff" * 20
DIVERSITY = DhtConfig(id_difficulty=0).diversity()  # scripted ids are not ground


def fake(id_int: int, host: str) -> Contact:
    return Contact(id_int.to_bytes(20, "big"), id_int.to_bytes(32, "big"), (host, 4000))


def crowd_of(size: int) -> list[Contact]:
    """Ground ids nearest the target, 4 per network (the most one network may place)."""
    return [fake((n + 1) << 100, f"10.250.{n // 4}.{n % 4 + 1}") for n in range(size)]


def honest_nodes(count: int = 30) -> list[Contact]:
    """Honest nodes beyond the crowd, each in its own network; the nearest holds the record."""
    return [fake((1 << 150) + (n << 120), f"203.0.{n}.1") for n in range(count)]


def run_scripted(lookup: Lookup | DisjointLookup, crowd: list[Contact]) -> Counter[bytes]:
    """Answer every query at once: the crowd names the crowd, an honest node names the
    nearest crowd and the honest nodes, and the nearest honest node holds the record."""
    honest = honest_nodes()
    holder = honest[0].node_id
    crowd_ids = {c.node_id for c in crowd}
    asked: Counter[bytes] = Counter()
    for _ in range(10_000):
        picked = lookup.next_queries()
        if not picked:
            break
        for contact in picked:
            asked[contact.node_id] += 1
            if contact.node_id in crowd_ids:
                lookup.on_reply(contact.node_id, crowd, has_value=False)
            else:
                named = [*crowd[:16], *honest]
                lookup.on_reply(contact.node_id, named, has_value=contact.node_id == holder)
    assert lookup.done
    return asked


def seeds(crowd: list[Contact]) -> list[Contact]:
    """A reader's k closest: 8 of the crowd (nearest) and 12 honest nodes."""
    return [*crowd[:8], *honest_nodes()[:12]]


def scripted(paths: int, crowd_size: int) -> tuple[int, Counter[bytes]]:
    crowd = crowd_of(crowd_size)
    lookup = make_lookup(
        TARGET,
        LookupKind.VALUE,
        own_id=OWN,
        k=K,
        alpha=3,
        quorum=3,
        seeds=seeds(crowd),
        paths=paths,
        diversity=DIVERSITY,
    )
    asked = run_scripted(lookup, crowd)
    return lookup.value_holders, asked


@pytest.mark.parametrize(
    ("paths", "crowd_size", "finds"),
    [
        (1, 24, False),  # 6 networks fill the k closest of one path
        (2, 24, True),
        (3, 24, True),
        (2, 40, False),  # 10 networks fill the k closest of both paths: the bound
        (3, 40, True),
        (3, 60, False),  # 15 networks, 3 paths
    ],
)
def test_a_crowd_must_fill_every_path(paths: int, crowd_size: int, finds: bool) -> None:
    holders, asked = scripted(paths, crowd_size)
    assert (holders > 0) is finds
    assert max(asked.values()) == 1  # nobody was asked twice, by one path or two


@given(
    paths=st.integers(min_value=1, max_value=4),
    alpha=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_no_node_is_queried_by_two_paths(paths: int, alpha: int, seed: int) -> None:
    """Replies naming any nodes at all, answered in any order, failures included."""
    rng = random.Random(seed)
    nodes = [fake(rng.getrandbits(160), f"198.51.{n}.1") for n in range(80)]
    lookup = DisjointLookup(
        TARGET,
        LookupKind.NODE,
        own_id=OWN,
        k=8,
        alpha=alpha,
        quorum=3,
        seeds=rng.sample(nodes, 12),
        paths=paths,
        diversity=DIVERSITY,
    )
    asked: Counter[bytes] = Counter()
    waiting: list[Contact] = []
    for _ in range(10_000):
        for contact in lookup.next_queries():
            asked[contact.node_id] += 1
            waiting.append(contact)
        assert lookup.in_flight == len(waiting) <= max(alpha, paths)
        if not waiting:
            break
        contact = waiting.pop(rng.randrange(len(waiting)))
        if rng.random() < 0.2:
            lookup.on_failure(contact.node_id)
        else:
            lookup.on_reply(contact.node_id, rng.sample(nodes, 10), has_value=False)
    assert lookup.done
    assert max(asked.values()) == 1
    answered = lookup.closest_answered()
    assert len({c.node_id for c in answered}) == len(answered) <= 8
    assert all(asked[c.node_id] for c in answered)


def test_paths_are_configured_within_bounds() -> None:
    assert DhtConfig().disjoint_paths == 2
    for bad in (0, 9):
        with pytest.raises(ValueError):
            DhtConfig(disjoint_paths=bad)


# Whole cores in virtual time.

HONEST = 40
READERS = 10
SHARED_BITS = 10
PER_NETWORK = 4
NOW = 1_700_000_000.0
OWNER_SEED = b"crowd-owner".ljust(32, b"\x00")


def the_record() -> SignedRecord:
    owner = Identity.generate(OWNER_SEED)
    return sign_record(owner, RecordKind.PRESENCE, "target", b"honest", seq=1, now=NOW, ttl=7200)


@functools.cache
def ground(count: int) -> tuple[Identity, ...]:
    return grind(the_record().key, count, SHARED_BITS)


def readers_finding(
    networks: int, paths: int, *, put_after: bool = False, disjoint_puts: bool = False
) -> tuple[int, int]:
    """(honest readers whose get finds the record, honest nodes holding it).

    The record is put before a crowd of ``networks`` x 4 ground ids joins, or after
    (``put_after``); readers (none holds the record itself) take ``paths``."""
    config = DhtConfig(disjoint_paths=paths, disjoint_puts=disjoint_puts)
    net = MemNet(seed=7)
    net.now = NOW
    first = net.add(config=config)
    honest = [first] + [net.add(config=config, bootstrap=[first[0]]) for _ in range(HONEST - 1)]
    join(net, honest[1:])
    record = the_record()
    owner_address, owner = honest[1]
    if not put_after:
        put = net.wait(owner_address, owner.put(record, net.now))
        assert isinstance(put, PutResult) and put.stored >= config.k - 2

    hosts = [f"10.250.{n}.{i + 1}" for n in range(networks) for i in range(PER_NETWORK)]
    add_sybils(net, ground(len(hosts)), hosts, config, first[0])
    # The honest nodes meet the crowd the way a network does: lookups near the key.
    for address, core in honest[::4]:
        net.wait(address, core.find_node(record.key, net.now))
    if put_after:
        put = net.wait(owner_address, owner.put(record, net.now))
        assert isinstance(put, PutResult)

    holders = sum(bool(core.store.get(record.key, net.now)) for _, core in honest)
    readers = [(a, c) for a, c in honest if not c.store.get(record.key, net.now)][-READERS:]
    assert len(readers) == READERS
    found = 0
    for address, core in readers:
        result = net.wait(address, core.get(record.key, net.now))
        assert isinstance(result, GetResult)
        found += any(r.encoded == record.encoded for r in result.records)
    return found, holders


@pytest.mark.slow
def test_six_networks_eclipse_one_path_and_not_two() -> None:
    assert readers_finding(6, paths=1)[0] < READERS - 1  # the control: the crowd works
    assert readers_finding(6, paths=2)[0] >= READERS - 1


@pytest.mark.slow
def test_ten_networks_are_needed_against_two_paths_and_do_not_beat_three() -> None:
    assert readers_finding(10, paths=2)[0] < READERS - 1
    assert readers_finding(10, paths=3)[0] >= READERS - 1


@pytest.mark.slow
def test_a_disjoint_put_made_after_the_crowd_reaches_honest_nodes() -> None:
    found, holders = readers_finding(6, paths=2, put_after=True)
    assert holders <= 2 and found <= 2  # the control: a put of one path lands on the crowd
    found, holders = readers_finding(6, paths=2, put_after=True, disjoint_puts=True)
    assert holders >= DhtConfig().k // 2
    assert found >= READERS - 1


def test_a_disjoint_put_still_stores_at_the_true_k_closest() -> None:
    config = DhtConfig(disjoint_puts=True)
    net = MemNet(seed=3)
    first = net.add(config=config)
    nodes = [first] + [net.add(config=config, bootstrap=[first[0]]) for _ in range(59)]
    join(net, nodes[1:])
    record = the_record()
    address, owner = nodes[5]
    put = net.wait(address, owner.put(record, net.now))
    assert isinstance(put, PutResult)
    target = int.from_bytes(record.key, "big")
    ranked = sorted(nodes, key=lambda node: node[1].table.own_int ^ target)
    assert all(core.store.get(record.key, net.now) for _, core in ranked[: config.k])
    assert config.k < put.stored <= config.disjoint_paths * config.k + 1

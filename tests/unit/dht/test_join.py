"""The join (Kademlia section 2.3): self-lookup, then a refresh of every bucket farther
than the closest neighbour. In virtual time, hundreds of cores wired in memory.

Without the refreshes a freshly built network has subtrees some nodes cannot see
(and that cannot see them), and lookups for keys there converge on the k closest
nodes of a neighbouring subtree: puts miss the true k closest and gets miss the
record. These tests compute the true XOR ranks from every node id.
"""

from __future__ import annotations

import functools
import random

import pytest

from p2pnode.dht.config import DhtConfig, GetResult, PutResult
from p2pnode.dht.keys import ID_BITS, Address, bucket_index, id_to_int
from p2pnode.dht.messages import FindNode, decode_frame
from p2pnode.dht.protocol import DhtCore
from p2pnode.dht.routing import DEFAULT_K
from p2pnode.records import RecordKind, sign_record
from tests.unit.dht.memnet import MemNet

JOIN_BATCH = 10  # nodes joining at once, as in benchmarks/dht_lookup.py


def _all_done(net: MemNet, ops: list[tuple[Address, int]]) -> bool:
    return all(op in net.results for op in ops)


def joined_network(
    size: int, k: int, *, seed: int = 1
) -> tuple[MemNet, list[tuple[Address, DhtCore]]]:
    """``size`` cores bootstrapped from the first, ``JOIN_BATCH`` at a time."""
    net = MemNet(seed=seed)
    config = DhtConfig(k=k)
    first = net.add(config=config)
    nodes = [first]
    for start in range(1, size, JOIN_BATCH):
        batch = [
            net.add(config=config, bootstrap=[first[0]])
            for _ in range(min(JOIN_BATCH, size - start))
        ]
        ops = [(address, core.bootstrap(net.now)) for address, core in batch]
        net.run_until(functools.partial(_all_done, net, ops), limit=120)
        assert all(net.results.pop(op, None) is not None for op in ops), "a join did not finish"
        nodes += batch
    return net, nodes


def check_puts_and_gets(
    net: MemNet, nodes: list[tuple[Address, DhtCore]], k: int, keys: int, seed: int
) -> None:
    """Each put lands on exactly the true k closest nodes; every get finds the record."""
    rng = random.Random(seed)
    ids = [id_to_int(core.own_id) for _, core in nodes]
    for item in range(keys):
        address, core = rng.choice(nodes)
        record = sign_record(
            core.identity, RecordKind.PRESENCE, f"item-{item}", b"x", seq=1, now=net.now, ttl=3600
        )
        put = net.wait(address, core.put(record, net.now))
        assert isinstance(put, PutResult)
        key = id_to_int(record.key)
        ranked = sorted(range(len(nodes)), key=lambda i: ids[i] ^ key)
        holders = sorted(
            rank for rank, i in enumerate(ranked) if nodes[i][1].store.get(record.key, net.now)
        )
        assert holders[:k] == list(range(k)), f"item {item}: held at XOR ranks {holders}"
        for reader_address, reader in rng.sample(nodes, 3):
            got = net.wait(reader_address, reader.get(record.key, net.now))
            assert isinstance(got, GetResult) and record in got.records, f"item {item}"


def test_after_the_joins_no_node_is_blind_to_a_populated_bucket_range() -> None:
    # Section 2.3's point: once every node refreshed its far buckets, every bucket
    # whose range holds some node holds at least one contact, so a lookup can always
    # step into the key's subtree. Without the refreshes most nodes miss some range.
    k = 20
    net, nodes = joined_network(100, k)
    ids = [id_to_int(core.own_id) for _, core in nodes]
    blind = {}
    for own, (address, core) in zip(ids, nodes, strict=True):
        populated = {bucket_index(own, other) for other in ids if other != own}
        missing = populated - set(core.table.used_buckets())
        if missing:
            blind[address] = sorted(missing)
    assert blind == {}
    check_puts_and_gets(net, nodes, k, keys=15, seed=2)


@pytest.mark.parametrize("k", [4, 8])
def test_small_k_puts_reach_the_true_k_closest_and_gets_find_them(k: int) -> None:
    net, nodes = joined_network(150, k)
    check_puts_and_gets(net, nodes, k, keys=30, seed=1)


@pytest.mark.parametrize("client_mode", [False, True])
def test_a_join_refreshes_each_far_bucket_once_then_stays_silent(client_mode: bool) -> None:
    net, nodes = joined_network(40, 20)
    address, joiner = net.add(config=DhtConfig(client_mode=client_mode), bootstrap=[nodes[0][0]])
    own = id_to_int(joiner.own_id)
    targets: list[bytes] = []

    def tap(data: bytes, source: Address, destination: Address) -> None:
        message = decode_frame(data).message
        if source == address and isinstance(message, FindNode):
            targets.append(message.target)

    net.tap = tap
    net.wait(address, joiner.bootstrap(net.now), limit=60)
    net.run_until(lambda: False, limit=5)  # the last answers and challenges land
    looked_up = {bucket_index(own, id_to_int(target)) for target in targets}
    if client_mode:
        assert looked_up == {-1}  # only itself: no table keeps a client
    else:
        others = sorted(bucket_index(own, id_to_int(core.own_id)) for _, core in nodes)
        # -1: the self-lookup; then a random id in every bucket beyond the closest
        # neighbour's, save those nearer than the k-th closest (the self-lookup asked
        # every node in them).
        first = max(others[0] + 1, others[DEFAULT_K - 1])
        assert looked_up == {-1, *range(first, ID_BITS)}
    # The join is over: nothing more is sent while the network idles (below the
    # 15 min bucket-refresh interval, with no records to replicate).
    sent = sum(core.datagrams_out for core in net.cores.values())
    net.run_until(lambda: False, limit=600)
    assert sum(core.datagrams_out for core in net.cores.values()) == sent

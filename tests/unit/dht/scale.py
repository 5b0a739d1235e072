"""A large network of sans-IO cores in virtual time, built without running every join.

Running 10,000 real joins one by one would cost about a million datagrams; the
network a join produces is known, though: each node's bucket i holds up to k
nodes from the id range at XOR distance [2**i, 2**(i+1)). ``prefilled`` builds
exactly that from the sorted ids (contacts sampled per bucket with a seeded
random source) and hands each core its table; everything after (puts, gets,
timeouts on dead nodes, replication, republishing) runs the real protocol over
``MemNet``, with seeded loss and reordering if asked.

Used by tests/unit/dht/test_scale.py and ``benchmarks/dht_lookup.py --simulate``.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from p2pnode.dht.config import DhtConfig, GetResult, PutResult
from p2pnode.dht.keys import ID_BITS, Address, Contact
from p2pnode.dht.protocol import DhtCore
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, sign_record
from tests.unit.dht.memnet import MemNet

__all__ = ["ScaleReport", "churn_run", "prefilled"]


def prefilled(
    size: int, *, seed: int = 1, config: DhtConfig | None = None, loss: float = 0.0
) -> tuple[MemNet, list[tuple[Address, DhtCore]]]:
    """``size`` cores whose routing tables look as after every node joined."""
    net = MemNet(seed=seed, loss=loss)
    config = config or DhtConfig()
    nodes = [
        net.add(
            config=config,
            identity=Identity.generate(seed.to_bytes(8, "big") + n.to_bytes(24, "big")),
        )
        for n in range(size)
    ]
    order = sorted(range(size), key=lambda i: nodes[i][1].table.own_int)
    ids = [nodes[i][1].table.own_int for i in order]
    contacts = [
        Contact(core.own_id, core.identity.public_key, address)
        for address, core in (nodes[i] for i in order)
    ]
    rng = random.Random(seed)
    k = config.k
    for position, own in enumerate(ids):
        table = nodes[order[position]][1].table
        diversity, table.diversity = table.diversity, None  # every node has its own /24
        for index in range(ID_BITS - 1, -1, -1):
            low = ((own >> index) ^ 1) << index
            start = bisect.bisect_left(ids, low)
            end = bisect.bisect_left(ids, low + (1 << index))
            if end > start:
                chosen = range(start, end) if end - start <= k else rng.sample(range(start, end), k)
                for other in chosen:
                    table.offer(contacts[other], net.now)
            mine = bisect.bisect_left(ids, (own >> index) << index)
            if bisect.bisect_left(ids, ((own >> index) + 1) << index) - mine <= 1:
                break  # no other node shares this many leading bits: lower buckets are empty
        table.diversity = diversity
    for address, core in nodes:
        core.observed = address  # what the PONGs of its join would have told it
    return net, nodes


@dataclass(frozen=True)
class ScaleReport:
    nodes: int
    records: int
    stored_median: int  # nodes a put reported holding its record
    gets_before: int  # gets that found the record, before the kill
    gets_after: int  # gets that found the record, after the kill and an interval
    gets: int  # gets tried, each phase
    hops_median: float
    queries_median: float  # FIND_VALUE requests per get
    datagrams_per_get: float
    datagrams_per_miss: float  # per get of a key nobody stored (0.0: none tried)


def churn_run(
    net: MemNet,
    nodes: list[tuple[Address, DhtCore]],
    *,
    records: int,
    gets: int,
    kill_fraction: float,
    seed: int = 2,
    misses: int = 0,
) -> ScaleReport:
    """Put ``records`` records, get them, kill ``kill_fraction`` of the nodes at once,
    let a replication interval pass, and get them again from live nodes; then
    ``misses`` gets of keys nobody stored (what a get costs when it finds nothing)."""
    rng = random.Random(seed)
    stored: list[int] = []
    put_records: list[SignedRecord] = []
    for item in range(records):
        address, core = rng.choice(nodes)
        record = sign_record(
            core.identity, RecordKind.PRESENCE, f"r{item}", b"x", seq=1, now=net.now, ttl=86400
        )
        result = net.wait(address, core.put(record, net.now), limit=60)
        assert isinstance(result, PutResult)
        stored.append(result.stored)
        put_records.append(record)

    hops: list[int] = []
    queries: list[int] = []

    def get_all(alive: list[tuple[Address, DhtCore]]) -> int:
        found = 0
        for attempt in range(gets):
            record = put_records[attempt % len(put_records)]
            address, core = rng.choice(alive)
            before = net.delivered
            result = net.wait(address, core.get(record.key, net.now), limit=60)
            assert isinstance(result, GetResult)
            datagrams.append(net.delivered - before)
            hops.append(result.hops)
            queries.append(result.queries)
            found += any(r.encoded == record.encoded for r in result.records)
        return found

    datagrams: list[int] = []
    before = get_all(nodes)
    dead = set(rng.sample(range(len(nodes)), int(kill_fraction * len(nodes))))
    for index in dead:
        net.down.add(nodes[index][0])
    alive = [node for index, node in enumerate(nodes) if index not in dead]
    interval = max(core.config.replicate_interval for _, core in nodes[:1])
    net.run_until(lambda: False, limit=interval + 5)
    after = get_all(alive)
    missed: list[int] = []
    for _ in range(misses):
        address, core = rng.choice(alive)
        before_miss = net.delivered
        result = net.wait(address, core.get(rng.randbytes(20), net.now), limit=60)
        assert isinstance(result, GetResult) and not result.records
        missed.append(net.delivered - before_miss)
    return ScaleReport(
        nodes=len(nodes),
        records=records,
        stored_median=sorted(stored)[len(stored) // 2],
        gets_before=before,
        gets_after=after,
        gets=gets,
        hops_median=sorted(hops)[len(hops) // 2],
        queries_median=sorted(queries)[len(queries) // 2],
        datagrams_per_get=sum(datagrams) / len(datagrams),
        datagrams_per_miss=sum(missed) / len(missed) if missed else 0.0,
    )

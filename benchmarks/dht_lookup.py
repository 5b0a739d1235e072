"""DHT lookup benchmark: our Kademlia against the ``kademlia`` package and OpenDHT, same run.

    python benchmarks/dht_lookup.py --nodes 200
    python benchmarks/dht_lookup.py --nodes 200 --dead-fraction 0.1
    python benchmarks/dht_lookup.py --nodes 1000 --systems p2pnode,opendht
    python benchmarks/dht_lookup.py --simulate 10000 --puts 60 --gets 200

For each system in turn, a child process builds N nodes on loopback (ephemeral
ports, every node bootstrapped from one seed), waits until the routing tables
are healthy and the join traffic has settled, puts P records from P different
nodes, measures idle traffic and memory, optionally kills a fraction of the
nodes (closes their sockets), then runs G sequential gets of random keys from
random live nodes. The parent prints a table and, as its LAST line, one JSON
object (keys documented in docs/benchmarks.md).

Why children: one system's crash, hang or memory cannot spoil another's
figures; each child has a hard timeout. As root, each child also gets a private
network namespace, so the kernel's UDP counters count exactly its datagrams
(and nothing it sends can reach other programs on this machine).

The ``kademlia`` package (2.2.3) is measured with its replacement-cache /
``welcome_if_new`` STORE storm fixed by a subclass in this file, as in the
issue's orientation figures; ``--kademlia-unfixed`` measures it as shipped.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import cProfile
import dataclasses
import json
import logging
import pstats
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from _common import (
    can_isolate_network,
    isolated_command,
    percentile,
    print_final_json,
    print_table,
    ratio,
    rss_mb,
    run_worker,
    udp_datagrams_sent,
)

SYSTEMS = ("p2pnode", "kademlia", "opendht")
K = 20
ALPHA = 3
PATHS = 2  # DhtConfig.disjoint_paths's default
HEALTHY_CONTACTS = 8  # every node must know at least min(this, N-1) others before we measure
HEALTH_TIMEOUT = 60.0  # seconds to wait for healthy tables
SETTLE_TIMEOUT = 20.0  # seconds to wait for the join traffic to calm down
SETTLE_RATE_PER_NODE = 1.0  # datagrams/s per node below which traffic counts as settled
RECORD_TTL = 3600
VALUE_BYTES = 180  # anchors store random values of about our encoded record's size
OPENDHT_KEY_BITS = 2048  # RSA identities of OpenDHT's signed putters
METRICS = (
    "get_p50_ms",
    "get_p95_ms",
    "put_p50_ms",
    "success",
    "datagrams_per_get",
    "rss_mb_per_node",
    "idle_datagrams_per_s",
    "join_datagrams_per_node",
)

log = logging.getLogger("dht_lookup")


# --------------------------------------------------------------------------- systems


class System(abc.ABC):
    """One DHT implementation under test: N nodes in this process, addressed by index."""

    name: ClassVar[str]
    counting: ClassVar[str]  # how ``datagrams`` counts

    def __init__(self, nodes: int, rng: random.Random, args: argparse.Namespace) -> None:
        self.n = nodes
        self.rng = rng
        self.args = args
        self.notes: list[str] = []
        self.failures: Counter[str] = Counter()

    @abc.abstractmethod
    async def build(self) -> None:
        """Start N nodes and bootstrap every one from node 0."""

    @abc.abstractmethod
    def contacts(self) -> list[int]:
        """Routing-table size of every live node."""

    @abc.abstractmethod
    def datagrams(self) -> int | None:
        """Datagrams sent by all nodes so far (None if the system cannot tell)."""

    @abc.abstractmethod
    async def put(self, node: int, item: int) -> bool:
        """Node ``node`` publishes item ``item`` (its own record / a value); True if stored."""

    @abc.abstractmethod
    async def get(self, node: int, item: int) -> bool:
        """Node ``node`` looks item ``item`` up; True if the right value came back."""

    def signed_putters(self) -> int:
        """How many nodes can make an extra signed put (0: none; ours are all signed)."""
        return 0

    async def put_signed(self, putter: int, item: int) -> bool:
        """Signed putter number ``putter`` publishes a signed value (``signed_putters``)."""
        raise NotImplementedError

    def last_put_split(self) -> tuple[float, float] | None:
        """CPU seconds of the last put spent in the putter and in the busiest other node."""
        return None

    @abc.abstractmethod
    async def kill(self, nodes: Sequence[int]) -> None:
        """Stop these nodes abruptly (sockets closed, no goodbye)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every node still running."""


class OursSystem(System):
    """p2pnode.dht: Ed25519 identities, PRESENCE records signed by each owner."""

    name = "p2pnode"
    counting = "DhtNode.statistics().datagrams_out"

    def __init__(self, nodes: int, rng: random.Random, args: argparse.Namespace) -> None:
        super().__init__(nodes, rng, args)
        from p2pnode.dht import DhtNode
        from p2pnode.identity import Identity
        from p2pnode.records import SignedRecord

        self.identities = [Identity.generate(rng.randbytes(32)) for _ in range(nodes)]
        self.nodes: list[DhtNode] = []
        self.dead: set[int] = set()
        self.expected: dict[int, SignedRecord] = {}
        self.stored: list[int] = []
        self.cpu: list[float] = [0.0] * nodes  # CPU seconds each node spent on datagrams
        self._split: tuple[float, float] | None = None

    def _meter(self, index: int, node: Any) -> None:
        """Count the CPU each node spends on its datagrams and timers (before ``start``,
        which registers ``_readable`` with the loop): which node of one process did what."""

        def timed(work: Any) -> Any:
            def run() -> None:
                began = time.process_time()
                try:
                    work()
                finally:
                    self.cpu[index] += time.process_time() - began

            return run

        node._readable = timed(node._readable)
        node._on_timer = timed(node._on_timer)

    async def build(self) -> None:
        from p2pnode.dht import DhtConfig, DhtNode

        # Rate limits are per source IP and all N nodes send from 127.0.0.1: give that
        # IP the budget of N hosts, or the nodes would throttle each other as one host.
        config = DhtConfig(disjoint_paths=self.args.paths).sharing_ip(self.n)
        seed = DhtNode(
            self.identities[0],
            k=self.args.k,
            alpha=ALPHA,
            config=config,
            rng=random.Random(self.rng.random()),
        )
        self._meter(0, seed)
        await seed.start()
        self.nodes = [seed]
        self.nodes += [
            DhtNode(
                identity,
                bootstrap=[seed.address],
                k=self.args.k,
                alpha=ALPHA,
                config=config,
                rng=random.Random(self.rng.random()),
            )
            for identity in self.identities[1:]
        ]
        for index, node in enumerate(self.nodes[1:], start=1):
            self._meter(index, node)
        batch = max(1, self.args.join_batch)
        for first in range(1, self.n, batch):
            await asyncio.gather(*(node.start() for node in self.nodes[first : first + batch]))

    def contacts(self) -> list[int]:
        return [node.health().contacts for i, node in enumerate(self.nodes) if i not in self.dead]

    def datagrams(self) -> int:
        return sum(node.statistics().datagrams_out for node in self.nodes)

    async def put(self, node: int, item: int) -> bool:
        import msgpack

        from p2pnode.records import RecordKind, sign_record

        host, port = self.nodes[node].address
        payload = msgpack.packb([[host, port]])
        record = sign_record(
            self.identities[node],
            RecordKind.PRESENCE,
            f"bench-{item}",
            payload,
            seq=1,
            now=time.time(),
            ttl=RECORD_TTL,
        )
        self.expected[item] = record
        before = list(self.cpu)
        began = time.process_time()
        result = await self.nodes[node].put(record)
        self.stored.append(result.stored)
        spent = [after - was for after, was in zip(self.cpu, before, strict=True)]
        # The putter's share: its datagrams and timers, the put's start, and the event
        # loop's own overhead (not any node's; counted here, so an upper bound).
        others = max((cpu for i, cpu in enumerate(spent) if i != node), default=0.0)
        own = spent[node] + max(0.0, time.process_time() - began - sum(spent))
        self._split = (own, others)
        return result.stored > 0

    def last_put_split(self) -> tuple[float, float] | None:
        return self._split

    async def get(self, node: int, item: int) -> bool:
        from p2pnode.records import signature_valid

        expected = self.expected[item]
        result = await self.nodes[node].get(expected.key)
        return any(
            found.encoded == expected.encoded and signature_valid(found) for found in result.records
        )

    async def kill(self, nodes: Sequence[int]) -> None:
        for index in nodes:
            self.dead.add(index)
            await self.nodes[index].close()

    async def close(self) -> None:
        drops: Counter[str] = Counter()
        for node in self.nodes:
            drops.update(node.statistics().drops)
        for index, node in enumerate(self.nodes):
            if index not in self.dead:
                await node.close()
        if drops:
            shown = ", ".join(f"{reason} {count}" for reason, count in drops.most_common())
            self.notes.append(f"datagrams dropped by all nodes: {shown}")
        if self.stored:
            mean = sum(self.stored) / len(self.stored)
            self.notes.append(f"put: {mean:.1f} nodes hold each record on average")


class CountingTransport:
    """Wraps an asyncio datagram transport to count what rpcudp sends through it."""

    sent = 0

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport

    def sendto(self, data: bytes, address: Any) -> None:
        CountingTransport.sent += 1
        self.transport.sendto(data, address)

    def close(self) -> None:
        self.transport.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class KademliaSystem(System):
    """bmuller's ``kademlia`` 2.2.3 (rpcudp 5.0.1), k=20, alpha=3, the anchor we replaced."""

    name = "kademlia"
    counting = "rpcudp transport.sendto (wrapped in this benchmark)"

    def __init__(self, nodes: int, rng: random.Random, args: argparse.Namespace) -> None:
        super().__init__(nodes, rng, args)
        for noisy in ("kademlia", "rpcudp", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        self.server_class = _kademlia_server_class(storm_fixed=not args.kademlia_unfixed)
        self.servers: list[Any] = []
        self.dead: set[int] = set()
        self.expected: dict[int, tuple[str, bytes]] = {}
        if args.kademlia_unfixed:
            self.notes.append("as shipped: replacement-cache/welcome_if_new STORE storm NOT fixed")
        else:
            self.notes.append(
                "storm fixed in this benchmark: welcome_if_new treats replacement-cache "
                "contacts as known and uses stored digests as ids (no re-hash)"
            )

    async def build(self) -> None:
        for _ in range(self.n):
            node_id = self.rng.randbytes(20)
            server = self.server_class(ksize=self.args.k, alpha=ALPHA, node_id=node_id)
            await server.listen(0, interface="127.0.0.1")
            self.servers.append(server)
        seed = ("127.0.0.1", self.servers[0].transport.get_extra_info("sockname")[1])
        # One at a time: concurrent joins left kademlia with worse tables (lower success).
        for server in self.servers[1:]:
            await server.bootstrap([seed])

    def contacts(self) -> list[int]:
        return [
            sum(len(bucket) for bucket in server.protocol.router.buckets)
            for i, server in enumerate(self.servers)
            if i not in self.dead
        ]

    def datagrams(self) -> int:
        return CountingTransport.sent

    async def put(self, node: int, item: int) -> bool:
        key = f"bench-{item}-{self.rng.getrandbits(64):016x}"
        value = self.rng.randbytes(VALUE_BYTES)
        self.expected[item] = (key, value)
        return bool(await self.servers[node].set(key, value))

    async def get(self, node: int, item: int) -> bool:
        key, value = self.expected[item]
        found = await self.servers[node].get(key)
        return isinstance(found, bytes) and found == value

    async def kill(self, nodes: Sequence[int]) -> None:
        for index in nodes:
            self.dead.add(index)
            self.servers[index].stop()

    async def close(self) -> None:
        for index, server in enumerate(self.servers):
            if index not in self.dead:
                server.stop()


_KADEMLIA_STORES: set[asyncio.Future[Any]] = set()


def _kademlia_server_class(*, storm_fixed: bool) -> Any:
    """A kademlia Server whose protocol counts datagrams and, if asked, has the storm fixed."""
    from kademlia.network import Server
    from kademlia.node import Node
    from kademlia.protocol import KademliaProtocol

    class CountingProtocol(KademliaProtocol):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.DatagramTransport) -> None:
            self.transport = CountingTransport(transport)

    class FixedProtocol(CountingProtocol):
        def welcome_if_new(self, node: Any) -> None:
            """As upstream, with the two causes of the STORE/ping storm removed.

            Upstream: a contact parked in a full bucket's replacement cache is
            "new" on every message, so each of its messages re-sends every stored
            key to it; and stored keys (already SHA-1 digests) are hashed again
            (``Node(digest(key))``), so the "is it closer?" test picks random
            nodes. Both fixed here, nothing else changed.
            """
            bucket = self.router.buckets[self.router.get_bucket_for(node)]
            if node.id in bucket.nodes or node.id in bucket.replacement_nodes:
                return
            for key, value in self.storage:
                keynode = Node(key)
                neighbors = self.router.find_neighbors(keynode)
                if neighbors:
                    last = neighbors[-1].distance_to(keynode)
                    new_node_close = node.distance_to(keynode) < last
                    first = neighbors[0].distance_to(keynode)
                    this_closest = self.source_node.distance_to(keynode) < first
                if not neighbors or (new_node_close and this_closest):
                    # upstream fires and forgets; we keep a reference until it ends
                    task = asyncio.ensure_future(self.call_store(node, key, value))
                    _KADEMLIA_STORES.add(task)
                    task.add_done_callback(_KADEMLIA_STORES.discard)
            self.router.add_contact(node)

    class BenchServer(Server):  # type: ignore[misc]
        protocol_class = FixedProtocol if storm_fixed else CountingProtocol

    return BenchServer


class OpenDhtSystem(System):
    """OpenDHT 4.4.2 (PyPI wheel): one DhtRunner per node, peer discovery and rate limits off."""

    name = "opendht"
    counting = "2 x requests sent (DhtRunner.getNodeMessageStats; one reply per request assumed)"

    def __init__(self, nodes: int, rng: random.Random, args: argparse.Namespace) -> None:
        super().__init__(nodes, rng, args)
        import opendht

        self.dht = opendht
        self.runners: list[Any] = []
        self.dead: set[int] = set()
        self.expected: dict[int, tuple[Any, bytes]] = {}
        self.requests = 0
        # Nodes 1..signers get an RSA identity (OpenDHT signs with RSA; 2048 bits, not
        # its 4096 default, keeps key generation short) for ``put_signed``.
        self.signers = 0 if args.no_signed_puts else min(args.puts, nodes - 1)

    async def build(self) -> None:
        for index in range(self.n):
            config = self.dht.DhtConfig()
            config.setPeerDiscovery(False, False)
            config.setRateLimit(-1, -1)
            runner = self.dht.DhtRunner()
            if 1 <= index <= self.signers:
                identity = self.dht.Identity.generate(
                    f"bench-{index}", self.dht.Identity(), OPENDHT_KEY_BITS
                )
                runner.run(identity, port=0, ipv4="127.0.0.1", config=config)
            else:
                runner.run(port=0, ipv4="127.0.0.1", config=config)
            self.runners.append(runner)
        seed_port = str(self.runners[0].getBound().getPort())
        for runner in self.runners[1:]:
            runner.bootstrap("127.0.0.1", seed_port)

    def contacts(self) -> list[int]:
        inet = 2  # AF_INET
        return [
            runner.getRoutingTablesLog(inet).count("\n    Node ")
            for i, runner in enumerate(self.runners)
            if i not in self.dead
        ]

    def datagrams(self) -> int:
        # getNodeMessageStats returns the requests sent since its last call, then resets.
        for index, runner in enumerate(self.runners):
            if index not in self.dead:
                self.requests += sum(runner.getNodeMessageStats())
        return 2 * self.requests

    async def put(self, node: int, item: int) -> bool:
        key = self.dht.InfoHash.get(f"bench-{item}-{self.rng.getrandbits(64):016x}")
        value = self.rng.randbytes(VALUE_BYTES)
        self.expected[item] = (key, value)
        return bool(self.runners[node].put(key, self.dht.Value(value)))

    async def get(self, node: int, item: int) -> bool:
        key, value = self.expected[item]
        return any(bytes(found.data) == value for found in self.runners[node].get(key))

    def signed_putters(self) -> int:
        return self.signers

    async def put_signed(self, putter: int, item: int) -> bool:
        """``SecureDht::putSigned``: looks up the value's previous version (its seq), signs
        it with the node's RSA key, stores it; every storer checks the signature."""
        key = self.dht.InfoHash.get(f"bench-signed-{item}-{self.rng.getrandbits(64):016x}")
        value = self.dht.Value(self.rng.randbytes(VALUE_BYTES))
        return bool(self.runners[1 + putter].putSigned(key, value))

    async def kill(self, nodes: Sequence[int]) -> None:
        self.datagrams()  # bank the counters of the nodes about to go
        for index in nodes:
            self.dead.add(index)
            # join() stops the socket and the threads: an abrupt death. Never shutdown():
            # its Python callback runs on the DHT thread and deadlocks on the GIL held
            # here by join(), which the binding does not release.
            self.runners[index].join()

    async def close(self) -> None:
        for index, runner in enumerate(self.runners):
            if index not in self.dead:
                runner.join()


SYSTEM_CLASSES: dict[str, type[System]] = {
    "p2pnode": OursSystem,
    "kademlia": KademliaSystem,
    "opendht": OpenDhtSystem,
}


# --------------------------------------------------------------------------- one system


@dataclasses.dataclass(frozen=True)
class SystemResult:
    """What one child measured for one system (the JSON object it prints)."""

    get_p50_ms: float | None
    get_p95_ms: float | None
    get_cpu_p50_ms: float | None  # process CPU per get (see put_cpu_p50_ms)
    put_p50_ms: float | None
    put_p95_ms: float | None
    # CPU of the whole process (every node of the system, all its threads) per put: less
    # sensitive than wall time to the other programs sharing the machine.
    put_cpu_p50_ms: float | None
    # Of that CPU, what the putter itself spent and what the busiest other node spent
    # (ours only: its nodes share one thread; on separate machines the put would wait
    # for about the sum of these two, not for every node's work in turn).
    put_cpu_putter_p50_ms: float | None
    put_cpu_busiest_other_p50_ms: float | None
    # OpenDHT only: ``putSigned`` (RSA-signed values checked by every storer), measured
    # after the plain puts, from other nodes, with fresh keys.
    put_signed_p50_ms: float | None
    put_signed_cpu_p50_ms: float | None
    puts_signed_ok: int | None
    success: float | None
    datagrams_per_get: float | None
    rss_mb_per_node: float
    idle_datagrams_per_s: float | None
    join_datagrams_per_node: float | None  # build + settle, per joining node
    gets: int
    gets_ok: int
    puts: int
    puts_ok: int
    dead: int
    build_s: float
    healthy: bool
    settled: bool
    contacts_min: int | None
    contacts_median: float | None
    datagram_counting: str
    datagrams_per_get_counted_in_app: float | None
    notes: tuple[str, ...]


class DatagramMeter:
    """Datagrams sent so far: the kernel's count in a private namespace, else the system's own."""

    def __init__(self, system: System, kernel: bool) -> None:
        self.system = system
        self.kernel = kernel and udp_datagrams_sent() is not None

    @property
    def method(self) -> str:
        if self.kernel:
            return "kernel UDP OutDatagrams (private network namespace)"
        return self.system.counting

    def read(self) -> tuple[int | None, int | None]:
        """(authoritative count, the system's own count)."""
        own = self.system.datagrams()
        return (udp_datagrams_sent() if self.kernel else own), own


def _per(
    delta: tuple[int | None, int | None], start: tuple[int | None, int | None], n: float
) -> tuple[float | None, float | None]:
    def one(end: int | None, begin: int | None) -> float | None:
        return None if end is None or begin is None or n <= 0 else (end - begin) / n

    return one(delta[0], start[0]), one(delta[1], start[1])


async def _wait_healthy(system: System, deadline: float) -> bool:
    """Poll routing-table sizes until every live node knows enough others (bounded in time)."""
    want = min(HEALTHY_CONTACTS, system.n - 1)
    while True:
        sizes = system.contacts()
        if not sizes or min(sizes) >= want:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.25)


async def _wait_settled(meter: DatagramMeter, nodes: int, deadline: float) -> bool:
    """Wait until traffic falls below SETTLE_RATE_PER_NODE (joins done), bounded in time."""
    limit = max(5.0, SETTLE_RATE_PER_NODE * nodes)
    while True:
        before = meter.read()[0]
        await asyncio.sleep(0.5)
        after = meter.read()[0]
        if before is None or after is None or (after - before) / 0.5 < limit:
            return True
        if time.monotonic() >= deadline:
            return False


async def _signed_puts(
    system: System, puts: int, op_timeout: float
) -> tuple[list[float], list[float], int]:
    """Signed puts (wall ms, CPU ms, how many stored) from each signed putter in turn."""
    wall_ms: list[float] = []
    cpu_ms: list[float] = []
    stored = 0
    for item in range(min(puts, system.signed_putters())):
        began = time.perf_counter()
        began_cpu = time.process_time()
        try:
            ok = await asyncio.wait_for(system.put_signed(item, item), op_timeout)
        except Exception as error:
            system.failures[f"signed put {type(error).__name__}"] += 1
            ok = False
        wall_ms.append((time.perf_counter() - began) * 1000)
        cpu_ms.append((time.process_time() - began_cpu) * 1000)
        stored += ok
    return wall_ms, cpu_ms, stored


async def measure(system: System, args: argparse.Namespace, isolated: bool) -> SystemResult:
    """Build, put, idle, kill, get: the whole measurement of one system, bounded in time."""
    rng = system.rng
    n = system.n
    meter = DatagramMeter(system, kernel=isolated)
    rss_before = rss_mb()
    started = time.monotonic()
    join_start = meter.read()
    await system.build()
    healthy = await _wait_healthy(system, time.monotonic() + HEALTH_TIMEOUT)
    build_s = time.monotonic() - started
    settled = await _wait_settled(meter, n, time.monotonic() + SETTLE_TIMEOUT)
    joins = _per(meter.read(), join_start, max(1, n - 1))
    sizes = system.contacts()
    print(f"[{system.name}] {n} nodes up in {build_s:.1f} s", file=sys.stderr, flush=True)

    puts = min(args.puts, n)
    put_ms: list[float] = []
    put_cpu_ms: list[float] = []
    puts_ok = 0
    putter_ms: list[float] = []
    busiest_ms: list[float] = []
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    for item, node in enumerate(rng.sample(range(n), puts)):
        began = time.perf_counter()
        began_cpu = time.process_time()
        try:
            ok = await asyncio.wait_for(system.put(node, item), args.op_timeout)
        except Exception as error:  # a failed put is a figure, not a crash
            system.failures[f"put {type(error).__name__}"] += 1
            ok = False
        put_ms.append((time.perf_counter() - began) * 1000)
        put_cpu_ms.append((time.process_time() - began_cpu) * 1000)
        puts_ok += ok
        split = system.last_put_split()
        if split is not None:
            putter_ms.append(split[0] * 1000)
            busiest_ms.append(split[1] * 1000)
    if profiler is not None:
        profiler.disable()
        _write_profile(profiler, args.profile, system.name)
    signed_ms, signed_cpu_ms, signed_ok = await _signed_puts(system, puts, args.op_timeout)

    await asyncio.sleep(0.5)
    idle_start = meter.read()
    await asyncio.sleep(args.idle_seconds)
    idle = _per(meter.read(), idle_start, args.idle_seconds)
    rss_per_node = max(0.0, rss_mb() - rss_before) / n

    dead = rng.sample(range(n), round(args.dead_fraction * n)) if args.dead_fraction > 0 else []
    await system.kill(dead)
    alive = sorted(set(range(n)) - set(dead))

    get_ms: list[float] = []
    get_cpu_ms: list[float] = []
    gets_ok = 0
    gets_start = meter.read()
    budget_end = time.monotonic() + args.get_budget
    for _ in range(args.gets):
        if time.monotonic() >= budget_end:
            system.notes.append(f"get budget of {args.get_budget:.0f} s spent")
            break
        node = rng.choice(alive)
        item = rng.randrange(puts)
        began = time.perf_counter()
        began_cpu = time.process_time()
        try:
            ok = await asyncio.wait_for(system.get(node, item), args.op_timeout)
        except Exception as error:
            system.failures[f"get {type(error).__name__}"] += 1
            ok = False
        get_ms.append((time.perf_counter() - began) * 1000)
        get_cpu_ms.append((time.process_time() - began_cpu) * 1000)
        gets_ok += ok
    per_get = _per(meter.read(), gets_start, len(get_ms))
    await system.close()

    notes = list(system.notes)
    notes += [f"{count} x {what}" for what, count in sorted(system.failures.items())]
    return SystemResult(
        get_p50_ms=percentile(get_ms, 50),
        get_p95_ms=percentile(get_ms, 95),
        get_cpu_p50_ms=percentile(get_cpu_ms, 50),
        put_p50_ms=percentile(put_ms, 50),
        put_p95_ms=percentile(put_ms, 95),
        put_cpu_p50_ms=percentile(put_cpu_ms, 50),
        put_cpu_putter_p50_ms=percentile(putter_ms, 50),
        put_cpu_busiest_other_p50_ms=percentile(busiest_ms, 50),
        put_signed_p50_ms=percentile(signed_ms, 50),
        put_signed_cpu_p50_ms=percentile(signed_cpu_ms, 50),
        puts_signed_ok=signed_ok if system.signed_putters() else None,
        success=gets_ok / len(get_ms) if get_ms else None,
        datagrams_per_get=per_get[0],
        rss_mb_per_node=rss_per_node,
        idle_datagrams_per_s=idle[0],
        join_datagrams_per_node=joins[0],
        gets=len(get_ms),
        gets_ok=gets_ok,
        puts=puts,
        puts_ok=puts_ok,
        dead=len(dead),
        build_s=build_s,
        healthy=healthy,
        settled=settled,
        contacts_min=min(sizes) if sizes else None,
        contacts_median=percentile([float(s) for s in sizes], 50),
        datagram_counting=meter.method,
        datagrams_per_get_counted_in_app=per_get[1] if meter.kernel else None,
        notes=tuple(notes),
    )


def _write_profile(profiler: cProfile.Profile, path: str, system: str) -> None:
    """``--profile``: the put phase's profile to ``path.<system>`` (pstats), top lines to stderr."""
    target = f"{path}.{system}"
    profiler.dump_stats(target)
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(30)
    print(f"[{system}] put-phase profile in {target}", file=sys.stderr, flush=True)


def worker_main(args: argparse.Namespace) -> int:
    """Child process: measure one system, print its result as one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        system = SYSTEM_CLASSES[args.worker](args.nodes, random.Random(args.seed), args)
        result = asyncio.run(measure(system, args, isolated=args.isolated))
    except Exception as error:
        log.exception("%s failed", args.worker)
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        return 1
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


# --------------------------------------------------------------------------- parent


def _worker_command(system: str, args: argparse.Namespace, isolate: bool) -> list[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        system,
        "--nodes",
        str(args.nodes),
        "--dead-fraction",
        str(args.dead_fraction),
        "--gets",
        str(args.gets),
        "--puts",
        str(args.puts),
        "--seed",
        str(args.seed),
        "--idle-seconds",
        str(args.idle_seconds),
        "--op-timeout",
        str(args.op_timeout),
        "--get-budget",
        str(args.get_budget),
        "--join-batch",
        str(args.join_batch),
        "--k",
        str(args.k),
        "--paths",
        str(args.paths),
    ]
    if args.profile:
        command += ["--profile", str(Path(args.profile).resolve())]
    if args.kademlia_unfixed:
        command.append("--kademlia-unfixed")
    if args.no_signed_puts:
        command.append("--no-signed-puts")
    if isolate:
        command.append("--isolated")
        return isolated_command(command)
    return command


def _report(
    args: argparse.Namespace,
    results: dict[str, dict[str, object] | None],
    errors: dict[str, str | None],
) -> dict[str, object]:
    def figure(system: str, key: str) -> float | None:
        result = results.get(system)
        value = result.get(key) if result else None
        return float(value) if isinstance(value, int | float) else None

    headers = [
        "system",
        "get p50 ms",
        "get p95 ms",
        "get CPU ms",
        "put p50 ms",
        "put p95 ms",
        "put CPU ms",
        "success %",
        "dgrams/get",
        "RSS MB/node",
        "idle dgrams/s",
        "join dgrams",
        "gets",
        "build s",
    ]
    rows: list[list[object]] = []
    for system in args.system_list:
        result = results.get(system)
        if result is None:
            rows.append([system, *(["-"] * (len(headers) - 1))])
            continue
        success = figure(system, "success")
        rows.append(
            [
                system,
                figure(system, "get_p50_ms"),
                figure(system, "get_p95_ms"),
                figure(system, "get_cpu_p50_ms"),
                figure(system, "put_p50_ms"),
                figure(system, "put_p95_ms"),
                figure(system, "put_cpu_p50_ms"),
                None if success is None else round(success * 100, 1),
                figure(system, "datagrams_per_get"),
                round(figure(system, "rss_mb_per_node") or 0.0, 4),
                figure(system, "idle_datagrams_per_s"),
                figure(system, "join_datagrams_per_node"),
                result.get("gets"),
                figure(system, "build_s"),
            ]
        )
    print()
    print(
        f"DHT lookup benchmark: {args.nodes} nodes on loopback, k={args.k} (OpenDHT: 8), "
        f"alpha={ALPHA}, "
        f"{args.dead_fraction:.0%} killed before the gets, {args.puts} puts, {args.gets} gets"
    )
    print_table(headers, rows)
    ours = figure("p2pnode", "get_p50_ms")
    ratio_opendht = ratio(ours, figure("opendht", "get_p50_ms"))
    ratio_kademlia = ratio(ours, figure("kademlia", "get_p50_ms"))
    print()
    for label, value in (("OpenDHT", ratio_opendht), ("kademlia", ratio_kademlia)):
        shown = "-" if value is None else f"{value:.2f}"
        print(f"get p50, ours / {label}: {shown}")
    for label, key in (
        ("join datagrams", "join_datagrams_per_node"),
        ("put p50", "put_p50_ms"),
        ("put CPU p50", "put_cpu_p50_ms"),
        ("get CPU p50", "get_cpu_p50_ms"),
    ):
        value = ratio(figure("p2pnode", key), figure("opendht", key))
        print(f"{label}, ours / OpenDHT: {'-' if value is None else f'{value:.2f}'}")
    signed_wall = ratio(figure("p2pnode", "put_p50_ms"), figure("opendht", "put_signed_p50_ms"))
    signed_cpu = ratio(
        figure("p2pnode", "put_cpu_p50_ms"), figure("opendht", "put_signed_cpu_p50_ms")
    )
    for label, value in (("put p50", signed_wall), ("put CPU p50", signed_cpu)):
        shown = "-" if value is None else f"{value:.2f}"
        print(f"{label}, ours / OpenDHT putSigned: {shown}")

    def in_ms(system: str, key: str) -> str:
        value = figure(system, key)
        return "-" if value is None else f"{value:.2f}"

    print(
        f"OpenDHT putSigned p50: {in_ms('opendht', 'put_signed_p50_ms')} ms wall, "
        f"{in_ms('opendht', 'put_signed_cpu_p50_ms')} ms CPU; ours, CPU per put in the "
        f"putter {in_ms('p2pnode', 'put_cpu_putter_p50_ms')} ms, in the busiest other "
        f"node {in_ms('p2pnode', 'put_cpu_busiest_other_p50_ms')} ms"
    )
    for system in args.system_list:
        result = results.get(system)
        if result is None:
            print(f"{system}: no result: {errors.get(system)}")
            continue
        print(
            f"{system}: healthy={result.get('healthy')} settled={result.get('settled')} "
            f"contacts min={result.get('contacts_min')} median={result.get('contacts_median')}; "
            f"datagrams counted by {result.get('datagram_counting')}"
        )
        notes = result.get("notes")
        for note in notes if isinstance(notes, list) else []:
            print(f"  - {note}")

    report: dict[str, object] = {"nodes": args.nodes, "dead_fraction": args.dead_fraction}
    for system in SYSTEMS:
        result = results.get(system)
        report[system] = result
        report[f"{system}_error"] = errors.get(system)
    report["ratio_get_p50_vs_opendht"] = ratio_opendht
    report["ratio_get_p50_vs_kademlia"] = ratio_kademlia
    join_ours = figure("p2pnode", "join_datagrams_per_node")
    report["join_datagrams_per_node"] = join_ours
    report["ratio_join_vs_opendht"] = ratio(join_ours, figure("opendht", "join_datagrams_per_node"))
    report["ratio_put_p50_vs_opendht"] = ratio(
        figure("p2pnode", "put_p50_ms"), figure("opendht", "put_p50_ms")
    )
    report["ratio_get_cpu_p50_vs_opendht"] = ratio(
        figure("p2pnode", "get_cpu_p50_ms"), figure("opendht", "get_cpu_p50_ms")
    )
    report["ratio_put_cpu_p50_vs_opendht"] = ratio(
        figure("p2pnode", "put_cpu_p50_ms"), figure("opendht", "put_cpu_p50_ms")
    )
    report["ratio_put_p50_vs_opendht_signed"] = signed_wall
    report["ratio_put_cpu_p50_vs_opendht_signed"] = signed_cpu
    report["k"] = args.k
    report["paths"] = args.paths
    report["kademlia_storm_fixed"] = not args.kademlia_unfixed
    report["gets"] = args.gets
    report["puts"] = args.puts
    report["seed"] = args.seed
    return report


def parent_main(args: argparse.Namespace) -> int:
    isolate = args.isolate == "on" or (args.isolate == "auto" and can_isolate_network())
    results: dict[str, dict[str, object] | None] = {}
    errors: dict[str, str | None] = {s: "not run (see --systems)" for s in SYSTEMS}
    for system in args.system_list:
        print(f"[{system}] measuring {args.nodes} nodes ...", file=sys.stderr, flush=True)
        outcome = run_worker(_worker_command(system, args, isolate), args.system_timeout)
        results[system] = outcome.result
        errors[system] = outcome.error
        state = "done" if outcome.error is None else f"FAILED: {outcome.error}"
        print(f"[{system}] {state} in {outcome.seconds:.1f} s", file=sys.stderr, flush=True)
    print_final_json(_report(args, results, errors))
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Build N DHT nodes on loopback per system (ours, the kademlia package, OpenDHT) and "
            "measure put/get latency, success, datagrams per get, memory per node and idle "
            "traffic. Prints a table, then one JSON object as the last line."
        )
    )
    parser.add_argument("--nodes", type=int, default=200, help="nodes per system (default 200)")
    parser.add_argument(
        "--dead-fraction",
        type=float,
        default=0.0,
        help="fraction of nodes killed after the puts, before the gets (default 0)",
    )
    parser.add_argument("--gets", type=int, default=200, help="sequential gets (default 200)")
    parser.add_argument(
        "--puts", type=int, default=50, help="records put, each by a different node (default 50)"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of p2pnode,kademlia,opendht (default: all, in that order)",
    )
    parser.add_argument(
        "--kademlia-unfixed",
        action="store_true",
        help="measure the kademlia package as shipped, with its STORE storm (default: fixed)",
    )
    parser.add_argument(
        "--k",
        type=int,
        default=K,
        help=f"bucket size and replication of ours and kademlia (default {K}; OpenDHT's "
        "TARGET_NODES is 8: --k 8 compares a put on 8 nodes with OpenDHT's)",
    )
    parser.add_argument(
        "--paths",
        type=int,
        default=PATHS,
        help=f"disjoint paths per get of ours (S/Kademlia; default {PATHS}, 1: one path)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--idle-seconds", type=float, default=3.0, help="idle traffic window (default 3)"
    )
    parser.add_argument(
        "--op-timeout", type=float, default=30.0, help="one put or get gives up after (default 30)"
    )
    parser.add_argument(
        "--get-budget",
        type=float,
        default=90.0,
        help="the get phase stops after this many seconds, gets done so far count (default 90)",
    )
    parser.add_argument(
        "--join-batch",
        type=int,
        default=10,
        help="p2pnode nodes started concurrently while joining (default 10)",
    )
    parser.add_argument(
        "--system-timeout",
        type=float,
        default=420.0,
        help="hard limit per system's child process, seconds (default 420)",
    )
    parser.add_argument(
        "--isolate",
        choices=("auto", "on", "off"),
        default="auto",
        help="run each system in a private network namespace so the kernel counts its "
        "datagrams exactly (auto: when root with unshare and ip)",
    )
    parser.add_argument(
        "--simulate",
        type=int,
        default=0,
        metavar="N",
        help="run N sans-IO cores in virtual time instead (hops, datagrams per get, success "
        "before and after --churn)",
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=0.3,
        help="--simulate: fraction of nodes killed at once before the second gets (default 0.3)",
    )
    parser.add_argument(
        "--misses",
        type=int,
        default=20,
        help="--simulate: gets of keys nobody stored, after the others (default 20)",
    )
    parser.add_argument(
        "--no-signed-puts",
        action="store_true",
        help="skip OpenDHT's signed puts (putSigned, RSA identities on --puts nodes)",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="cProfile the put phase of each system into PATH.<system> (pstats; the top "
        "functions go to stderr). Slows the puts: their figures are then not comparable",
    )
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--isolated", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.system_list if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    if not 0.0 <= args.dead_fraction < 1.0:
        parser.error("--dead-fraction must be in [0, 1)")
    if not 1 <= args.paths <= 8:
        parser.error("--paths must be 1 to 8")
    if args.gets < 1 or args.puts < 1:
        parser.error("--gets and --puts must be at least 1")
    return args


def simulate_main(args: argparse.Namespace) -> int:
    """``--simulate N``: the sans-IO core, N nodes in virtual time (tests/unit/dht/scale.py).

    Tables as joins leave them; then puts, gets before and after killing
    ``--churn`` of the nodes at once and one replication interval, 1 % loss and
    reordering. No anchor: OpenDHT and ``kademlia`` have no virtual-time mode.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from p2pnode.dht import DhtConfig
    from tests.unit.dht.scale import churn_run, prefilled

    started = time.monotonic()
    config = dataclasses.replace(DhtConfig(), replicate_interval=30.0, disjoint_paths=args.paths)
    net, nodes = prefilled(args.simulate, seed=args.seed, config=config, loss=0.01)
    net.jitter = 0.004
    built = time.monotonic() - started
    report = churn_run(
        net,
        nodes,
        records=args.puts,
        gets=args.gets,
        kill_fraction=args.churn,
        seed=args.seed,
        misses=args.misses,
    )
    seconds = time.monotonic() - started
    figures: dict[str, object] = dataclasses.asdict(report)
    figures["success_before"] = report.gets_before / report.gets
    figures["success_after_churn"] = report.gets_after / report.gets
    figures["churn_fraction"] = args.churn
    figures["paths"] = args.paths
    figures["build_s"] = round(built, 1)
    figures["seconds"] = round(seconds, 1)
    print(
        f"\nDHT in virtual time: {args.simulate} sans-IO cores, k={K}, {args.paths} disjoint "
        f"path(s) per get, 1 % loss, reordering; {args.puts} puts, {args.gets} gets before and "
        f"after killing {args.churn:.0%}, {args.misses} gets of absent keys"
    )
    print_table(
        [
            "nodes",
            "hops p50",
            "FIND_VALUE/get p50",
            "dgrams/get",
            "dgrams/miss",
            "success",
            "after churn",
            "s",
        ],
        [
            [
                report.nodes,
                report.hops_median,
                report.queries_median,
                round(report.datagrams_per_get, 1),
                round(report.datagrams_per_miss, 1),
                figures["success_before"],
                figures["success_after_churn"],
                figures["seconds"],
            ]
        ],
    )
    print_final_json({"simulate": figures})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.simulate:
        return simulate_main(args)
    if args.worker:
        return worker_main(args)
    return parent_main(args)


if __name__ == "__main__":
    raise SystemExit(main())

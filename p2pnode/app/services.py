"""The node's own services: its DHT, a dial-back STUN server, the relay search.

Thin adapters over parts written before the runtime (``p2pnode.app.service``
states the contract they follow): each gets a name, start/stop, a life to
supervise (``run``) where it has one, and a frozen statistics snapshot. New
services (presence, mailbox, chat, calls, SIP gateway) implement the contract
themselves in their own layer and need no adapter. The relay roles live in
``app.roles``, the ENUM DNS gateway in ``app.gateway``.

Why the DHT service measures lookup latency itself: the control API, the
directory, the relay search and the gateway reach the DHT through
``DhtService.get``, so the histogram covers every lookup the node makes, without
the DHT exposing a timing hook.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass
from pathlib import Path

from nat.endpoint import StunService
from nat.stun.server import StunServerStats
from p2pnode.app.config import NodeConfig, hostport
from p2pnode.app.peer import DHT_STATE_FILE
from p2pnode.connectivity.relays import RELAY_BUCKETS, RelayFinder, SelectorConfig
from p2pnode.dht import DhtConfig, DhtNode, DhtStatistics, GetResult, PutResult
from p2pnode.directory.lookup import Directory
from p2pnode.identity import Identity
from p2pnode.records import SignedRecord

__all__ = [
    "LATENCY_BUCKETS",
    "DhtService",
    "DhtServiceStatistics",
    "LatencyHistogram",
    "RelaySearchService",
    "RelaySearchStatistics",
    "StunServerService",
    "directory_of",
]

Address = tuple[str, int]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative-free bucket counts (``counts[i]``: observations <= ``bounds[i]``,
    not counted in an earlier bucket; the last count is above every bound)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float
    count: int


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> LatencyHistogram:
        return LatencyHistogram(self.bounds, tuple(self.counts), self.total, sum(self.counts))


# ---------------------------------------------------------------------- DHT


@dataclass(frozen=True)
class DhtServiceStatistics:
    address: Address | None
    dht: DhtStatistics
    replacements: int
    joins: int  # times this service joined the network (1 unless restarted)
    gets: int  # lookups made through the node (control API, directory, gateway)
    puts: int
    get_latency: LatencyHistogram


class DhtService:
    """The node's DHT socket; the one place the node's lookups go through."""

    name = "dht"

    def __init__(self, identity: Identity, home: Path, config: NodeConfig) -> None:
        dht = config.dht
        self.node = DhtNode(
            identity,
            listen=hostport(config.node.listen),
            bootstrap=[hostport(b) for b in config.node.bootstrap],
            k=dht.k,
            alpha=dht.alpha,
            client_mode=config.node.client,
            config=DhtConfig(
                k=dht.k,
                alpha=dht.alpha,
                client_mode=config.node.client,
                disjoint_paths=dht.disjoint_paths,
                disjoint_puts=dht.disjoint_puts,
                id_difficulty=dht.id_difficulty,
                puzzle_loopback=dht.puzzle_loopback,
            ),
            state_path=home / DHT_STATE_FILE,
        )
        self._joins = 0
        self._gets = 0
        self._puts = 0
        self._latency = _Histogram(LATENCY_BUCKETS)
        self._bound: Address | None = None

    async def start(self) -> None:
        if self._bound is not None:  # a restart: bind the port we had
            self.node.listen = self._bound
        await self.node.start(wait_bootstrap=False)
        self._bound = self.node.address
        self._joins += 1

    async def stop(self) -> None:
        await self.node.close()

    @property
    def address(self) -> Address:
        return self.node.address

    async def get(self, key: bytes) -> GetResult:
        began = time.monotonic()
        try:
            return await self.node.get(key)
        finally:
            self._gets += 1
            self._latency.observe(time.monotonic() - began)

    async def put(self, record: SignedRecord) -> PutResult:
        self._puts += 1
        return await self.node.put(record)

    def statistics(self) -> DhtServiceStatistics:
        health = self.node.health()
        return DhtServiceStatistics(
            address=self._bound,
            dht=self.node.statistics(),
            replacements=health.replacements,
            joins=self._joins,
            gets=self._gets,
            puts=self._puts,
            get_latency=self._latency.snapshot(),
        )


class _NodeNetwork:
    """``directory.RecordNetwork`` over the DHT service (so its counters see every lookup)."""

    def __init__(self, dht: DhtService) -> None:
        self.dht = dht

    async def put(self, record: SignedRecord) -> int:
        return (await self.dht.put(record)).stored

    async def get(self, key: bytes) -> list[SignedRecord]:
        return list((await self.dht.get(key)).records)


def directory_of(dht: DhtService, trusted: frozenset[bytes]) -> Directory:
    return Directory(_NodeNetwork(dht), trusted=trusted, clock=time.time)


# ------------------------------------------------------------- STUN server


class StunServerService:
    """A STUN server with dial-back for other nodes' reachability checks (serve_stun)."""

    name = "stun"

    def __init__(self, listen: Address, alt_ip: str | None) -> None:
        self.listen = listen
        self.alt_ip = alt_ip
        self.server: StunService | None = None

    async def start(self) -> None:
        self.server = await StunService.start(self.listen, alt_ip=self.alt_ip)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def statistics(self) -> StunServerStats:
        if self.server is None:
            return StunServerStats(0, 0, 0, {})
        return self.server.server.statistics()


# ------------------------------------------------------------ relay search


@dataclass(frozen=True)
class RelaySearchStatistics:
    known: int  # advertised supernodes known
    chosen: tuple[Address, ...]  # the (at most two) relays this node would use now


class RelaySearchService:
    """Finds advertised supernodes in the DHT, health-checks them, keeps the best two."""

    name = "relay-search"

    def __init__(self, identity: Identity, dht: DhtService, *, wanted_dial_back: int) -> None:
        self.dht = dht
        self.finder = RelayFinder(
            self._fetch,
            own_key=identity.public_key,
            buckets_per_fetch=RELAY_BUCKETS,
            config=SelectorConfig(min_dial_back=wanted_dial_back),
        )
        self._stop = asyncio.Event()

    async def _fetch(self, key: bytes) -> tuple[SignedRecord, ...]:
        return tuple((await self.dht.get(key)).records)

    async def start(self) -> None:
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await self.finder.run(self._stop)

    async def stop(self) -> None:
        self._stop.set()

    def dial_back_servers(self) -> tuple[Address, ...]:
        return self.finder.dial_back_servers()

    def statistics(self) -> RelaySearchStatistics:
        chosen = tuple(relay.probe_address[1] for relay in self.finder.chosen())
        return RelaySearchStatistics(len(self.finder.selector), chosen)

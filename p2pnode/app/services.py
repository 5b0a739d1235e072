"""Today's parts of a node as services of the runtime (``p2pnode.app.service`` contract).

These are thin adapters: the DHT node, the supernode role controller (with the
relay it runs), the relay search and the ENUM DNS gateway were written before
the runtime and keep their own APIs; each adapter gives them a name, start/stop,
a life to supervise (``run``) where they have one, and a frozen statistics
snapshot. New services (presence, mailbox, chat, calls, SIP gateway) implement
the contract themselves in their own layer and need no adapter here.

Why the DHT service measures lookup latency itself: the control API and the
directory reach the DHT through ``DhtService.get``, so the histogram covers
every lookup the node makes for its users, without the DHT exposing a timing
hook.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.name

from nat.endpoint import StunService
from nat.reachability import Reachability
from nat.stun.server import StunServerStats
from p2pnode.app.config import NodeConfig, hostport
from p2pnode.app.peer import DHT_STATE_FILE, RoleOptions
from p2pnode.connectivity.credentials import CREDENTIALS_CODE, CredentialsRequest, decode_request
from p2pnode.connectivity.relays import RELAY_BUCKETS, RelayFinder, SelectorConfig
from p2pnode.connectivity.supernode import Supernode, SupernodeConfig
from p2pnode.dht import DhtConfig, DhtNode, DhtStatistics, GetResult, Peer, PutResult
from p2pnode.directory.lookup import Directory
from p2pnode.gateways.enumdns import DEFAULT_ZONES
from p2pnode.gateways.enumdns.config import GatewayConfig, parse_zone
from p2pnode.gateways.enumdns.core import EnumDnsCore, GatewayStatistics
from p2pnode.gateways.enumdns.routes import RouteCache
from p2pnode.gateways.enumdns.server import EnumDnsServer
from p2pnode.identity import Identity, public_key_from_peer_id
from p2pnode.records import SignedRecord
from relay.allocation import FiveTuple
from relay.auth import CredentialLookup, first_match, rest_api_credentials, static_users
from relay.messages import RelayStatistics
from relay.policy import PeerAddressPolicy, parse_networks
from relay.quota import QuotaConfig
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService, ServiceAddresses
from relay.supernode import Role

__all__ = [
    "LATENCY_BUCKETS",
    "DhtService",
    "DhtServiceStatistics",
    "EnumDnsService",
    "EnumServiceStatistics",
    "LatencyHistogram",
    "RelaySearchService",
    "RelaySearchStatistics",
    "RoleChanged",
    "StunServerService",
    "SupernodeService",
    "SupernodeServiceStatistics",
    "TurnService",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WATCH_INTERVAL = 0.25  # how often the supernode adapter looks for a role change


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
            config=DhtConfig(k=dht.k, alpha=dht.alpha, client_mode=config.node.client),
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


# --------------------------------------------------------------- supernode


@dataclass(frozen=True)
class RoleChanged:
    """Event: the supernode role changed (client, candidate, supernode, draining...)."""

    role: Role
    reason: str
    reachability: Reachability


@dataclass(frozen=True)
class SupernodeServiceStatistics:
    role: Role
    reason: str
    reachability: Reachability
    load: int
    capacity: int
    accepting: bool
    relay_udp: tuple[Address, ...]
    dial_back: tuple[Address, ...]
    relay: RelayStatistics | None  # None while no relay runs
    stun: StunServerStats | None  # the dial-back STUN server beside the relay
    advert_publish_errors: int


def supernode_config(config: NodeConfig) -> SupernodeConfig:
    relay_host, relay_port = hostport(config.relay.listen)
    public = config.supernode.public_ip
    check = config.supernode.check_interval
    return SupernodeConfig(
        host=relay_host,
        port=relay_port,
        realm=config.relay.realm,
        capacity=config.relay.capacity,
        opt_out=not config.supernode.relay,
        check_interval=check,
        # An asserted verdict cannot flap: confirm it at once instead of after 30 s.
        pending_check_interval=1.0 if public else min(30.0, check),
        allow_peers=config.relay.allow_peers,
    )


def role_options(config: NodeConfig) -> RoleOptions:
    sn = config.supernode
    return RoleOptions(
        supernode=supernode_config(config) if sn.enabled else None,
        stun_servers=tuple(hostport(s) for s in sn.stun),
        min_agree=sn.min_agree,
        public_ip=sn.public_ip,
        serve_stun=hostport(sn.serve_stun) if sn.serve_stun else None,
        stun_alt_ip=sn.stun_alt_ip,
        find_relays=sn.relay_search,
    )


class SupernodeService:
    """The supernode role controller: reachability checks, promotion, the relay, the advert."""

    name = "supernode"

    def __init__(
        self,
        identity: Identity,
        dht: DhtService,
        options: RoleOptions,
        *,
        learned: Callable[[], tuple[Address, ...]] | None,
        stun: StunServerService | None,
        emit: Callable[[object], None],
    ) -> None:
        assert options.supernode is not None
        self.identity = identity
        self.dht = dht
        self.options = options
        self.learned = learned
        self.stun = stun
        self.emit = emit
        self.controller: Supernode | None = None
        self._stop = asyncio.Event()
        self._serving_credentials = False

    def _credentials(
        self, request: CredentialsRequest, peer: Peer, now: float
    ) -> tuple[object, ...] | None:
        """The credentials RPC, registered on the DHT once, answered by the controller
        of the moment (a restarted controller cannot register it again)."""
        controller = self.controller
        return controller.issuer.handle(request, peer, now) if controller is not None else None

    async def start(self) -> None:
        assert self.options.supernode is not None
        if not self._serving_credentials:
            self.dht.node.register_extension(CREDENTIALS_CODE, decode_request, self._credentials)
            self._serving_credentials = True
        dial_back = None
        if self.stun is not None and self.stun.server is not None:
            dial_back = self.stun.server.addresses[0]
        self._stop = asyncio.Event()
        self.controller = Supernode(
            self.identity,
            self.dht.node,
            self.options.supernode,
            verdicts=self.options.verdicts(self.learned),
            dial_back_server=dial_back,
            serve_credentials=False,
        )

    async def run(self) -> None:
        controller = self.controller
        assert controller is not None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(controller.run(self._stop))
            tasks.create_task(self._watch(controller))

    async def _watch(self, controller: Supernode) -> None:
        shown: tuple[Role, str] | None = None
        while not self._stop.is_set():
            status = controller.status()
            if (status.role, status.reason) != shown:
                shown = (status.role, status.reason)
                logger.info("role=%s reason=%s", status.role.value, status.reason)
                self.emit(RoleChanged(status.role, status.reason, status.reachability))
            try:
                async with asyncio.timeout(WATCH_INTERVAL):
                    await self._stop.wait()
            except TimeoutError:
                continue

    async def drain(self, limit: float) -> None:
        """Refuse new allocations and withdraw the advert, then wait (up to ``limit``)
        until the live allocations are gone; the runtime stops the relay afterwards."""
        controller = self.controller
        if controller is None or controller.relay is None:
            return
        await controller.opt_out()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while controller.relay is not None and loop.time() < deadline:
            if controller.relay.statistics().allocations == 0:
                break
            await asyncio.sleep(min(0.2, max(deadline - loop.time(), 0.0)))
        left = controller.relay.statistics().allocations if controller.relay else 0
        logger.info("drained relay: allocations_left=%d", left)

    async def stop(self) -> None:
        self._stop.set()
        if self.controller is not None:
            await self.controller.close()

    def statistics(self) -> SupernodeServiceStatistics:
        controller = self.controller
        if controller is None:
            return SupernodeServiceStatistics(
                Role.CLIENT, "not started", Reachability.UNKNOWN, 0, 0, False, (), (), None,
                None, 0,
            )  # fmt: skip
        status = controller.status()
        relay = controller.relay
        dial = relay.dial_back if relay is not None else None
        return SupernodeServiceStatistics(
            role=status.role,
            reason=status.reason,
            reachability=status.reachability,
            load=status.load,
            capacity=status.capacity,
            accepting=status.accepting,
            relay_udp=status.udp,
            dial_back=status.dial_back,
            relay=relay.statistics() if relay is not None else None,
            stun=dial.server.statistics() if dial is not None else None,
            advert_publish_errors=controller.publish_errors,
        )


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


# ---------------------------------------------------------------- ENUM DNS


@dataclass(frozen=True)
class EnumServiceStatistics:
    address: Address | None
    gateway: GatewayStatistics
    send_drops: int


def gateway_config(config: NodeConfig) -> GatewayConfig:
    section = config.enum
    rate = section.rate_limit
    return GatewayConfig(
        zones=tuple(parse_zone(z) for z in section.zones) or DEFAULT_ZONES,
        ns_name=dns.name.from_text(section.ns_name),
        rate_limit=rate,
        rate_burst=max(2.0 * rate, 1.0),
        serial=int(time.time()) % 2**32,
    )


class EnumDnsService:
    """The ENUM DNS gateway: NAPTR answers for numbers, resolved through the node's DHT."""

    name = "enum"

    def __init__(self, dht: DhtService, config: NodeConfig) -> None:
        self.listen = hostport(config.enum.listen)
        self.gateway = gateway_config(config)
        trusted = frozenset(public_key_from_peer_id(p) for p in config.enum.trust)
        self.directory = directory_of(dht, trusted)
        self.server: EnumDnsServer | None = None
        self.address: Address | None = None
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[Address] | None = None
        self._task: asyncio.Task[None] | None = None
        self._core: EnumDnsCore | None = None

    async def start(self) -> None:
        """Bind now (so a busy port fails the start), serve in ``run``."""
        loop = asyncio.get_running_loop()
        routes = RouteCache(self.directory.route, loop.time)
        self._core = EnumDnsCore(self.gateway, routes.route_nowait, clock=loop.time)
        self.server = EnumDnsServer(self._core, routes)
        self._stop = asyncio.Event()
        self._ready = loop.create_future()
        self._task = asyncio.create_task(self._serve(self.server, self._ready))
        try:
            self.address = await self._ready
        except BaseException:
            await self.stop()
            raise

    async def _serve(self, server: EnumDnsServer, ready: asyncio.Future[Address]) -> None:
        try:
            async with server.running(*self.listen) as bound:
                ready.set_result(bound)
                await self._stop.wait()
        except Exception as error:
            if not ready.done():
                ready.set_exception(error)
            else:
                raise

    async def run(self) -> None:
        assert self._task is not None
        await asyncio.shield(self._task)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await task
            except Exception as error:
                logger.warning("enum gateway ended with %s", error)

    def statistics(self) -> EnumServiceStatistics:
        if self._core is None or self.server is None:
            empty = GatewayStatistics(0, 0, 0, 0, 0, 0, 0)
            return EnumServiceStatistics(None, empty, 0)
        return EnumServiceStatistics(self.address, self._core.statistics(), self.server.send_drops)


# ------------------------------------------------------------ standalone TURN


def turn_config(config: NodeConfig, admission: Callable[[FiveTuple], bool]) -> TurnConfig:
    section = config.turn
    users = dict(user.split(":", 1) for user in section.users)
    lookups: list[CredentialLookup] = [static_users(users)] if users else []
    if section.secret is not None:
        lookups.append(rest_api_credentials(section.secret.encode()))
    low, high = (int(p) for p in section.ports.split("-"))
    return TurnConfig(
        realm=section.realm,
        credentials=first_match(*lookups),
        relay_ip=section.relay_ip or hostport(section.listen)[0],
        quota=QuotaConfig(
            max_allocations=section.max_allocations,
            max_allocations_per_identity=section.max_per_user,
            max_allocations_per_source_ip=section.max_per_ip,
            bandwidth_bytes_per_second=section.bandwidth_kbps * 1000 // 8,
        ),
        policy=PeerAddressPolicy(allow=parse_networks(section.allow_peers)),
        port_range=(low, high),
        admission=admission,
    )


class TurnService:
    """A standalone STUN + TURN server ([turn]); on SIGTERM it refuses new allocations
    (508, through the core's admission policy) and lets the live ones finish."""

    name = "turn"

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.listen = hostport(config.turn.listen)
        self.accepting = True
        self.relay: RelayService | None = None
        self.bound = ServiceAddresses((), ())

    def _admit(self, five_tuple: FiveTuple) -> bool:
        return self.accepting

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = TurnServer(turn_config(self.config, self._admit), random.SystemRandom(),
                            loop.time())  # fmt: skip
        tcp = [self.listen] if self.config.turn.tcp else []
        relay = RelayService(server, udp=[self.listen], tcp=tcp)
        self.bound = await relay.start()
        self.relay = relay
        self.accepting = True

    async def drain(self, limit: float) -> None:
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.relay is not None and loop.time() < deadline:
            if self.relay.statistics().allocations == 0:
                return
            await asyncio.sleep(min(0.2, max(deadline - loop.time(), 0.0)))

    async def stop(self) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.close()

    def statistics(self) -> RelayStatistics:
        if self.relay is None:
            return RelayStatistics(0, 0, 0, 0, 0, 0, 0, 0, 0, (), ())
        return self.relay.statistics()

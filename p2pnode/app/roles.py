"""The relay roles as services: the supernode role controller and a standalone TURN server.

``SupernodeService`` hosts ``connectivity.supernode.Supernode`` (reachability
checks, promotion, the relay, the advert) and publishes a ``RoleChanged`` event
when the role changes; when a check judges the running node behind NAT, its DHT
turns client (``DhtClientMode``): nobody can dial it, so it must not sit in
others' routing tables or hold their records (the start-up decision in
``peer_services.effective_config`` only knows the configuration);
``TurnService`` runs a STUN + TURN server with operator users (``[turn]``,
what ``p2pnode relay`` does). Both drain on SIGTERM: new
allocations are refused through the TURN core's admission policy (508) and
the live ones get up to ``[relay] drain_limit`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nat.reachability import Reachability
from nat.stun.server import StunServerStats
from p2pnode.app.config import NodeConfig, hostport
from p2pnode.app.peer import RoleOptions
from p2pnode.app.services import DhtService, StunServerService
from p2pnode.connectivity.credentials import CREDENTIALS_CODE, CredentialsRequest, decode_request
from p2pnode.connectivity.supernode import Supernode, SupernodeConfig
from p2pnode.dht import Peer
from p2pnode.identity import Identity
from relay.allocation import FiveTuple
from relay.auth import CredentialLookup, first_match, rest_api_credentials, static_users
from relay.messages import RelayStatistics
from relay.policy import PeerAddressPolicy, parse_networks
from relay.quota import QuotaConfig
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService, ServiceAddresses
from relay.supernode import Role
from relay.tls import TlsConfigError, server_context

__all__ = [
    "DhtClientMode",
    "RoleChanged",
    "SupernodeService",
    "SupernodeServiceStatistics",
    "TurnService",
    "role_options",
    "supernode_config",
    "turn_config",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
WATCH_INTERVAL = 0.25  # how often the supernode service looks for a role change


@dataclass(frozen=True)
class RoleChanged:
    """Event: the supernode role changed (client, candidate, supernode, draining...)."""

    role: Role
    reason: str
    reachability: Reachability


@dataclass(frozen=True)
class DhtClientMode:
    """Event: the running DHT became a client (query only) after a behind-NAT verdict."""

    reason: str


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
            node = self.dht.node
            if status.reachability is Reachability.BEHIND_NAT and not node.config.client_mode:
                node.enter_client_mode()  # one way: only a restart serves the DHT again
                logger.info("dht client mode: %s", status.reason)
                self.emit(DhtClientMode(status.reason))
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
        legacy_channels=section.rfc5766_channels,
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
        section = self.config.turn
        tcp = [self.listen] if section.tcp else []
        tls: list[Address] = []
        context = None
        if section.tls_listen is not None and section.tls_cert is not None:
            tls = [hostport(section.tls_listen)]
            key = Path(section.tls_key) if section.tls_key is not None else None
            try:
                context = server_context(Path(section.tls_cert), key)
            except TlsConfigError as error:  # a start failure the node reports
                raise OSError(f"TLS: {error}") from None
        relay = RelayService(server, udp=[self.listen], tcp=tcp, tls=tls, ssl_context=context)
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

"""The supernode role controller: promote a publicly reachable node to relay, visibly, safely.

(Moved here from ``p2pnode.app``: it is connectivity, and the runtime hosts it as a service.)

Inputs: the reachability verdict (``nat.reachability`` through a ``VerdictSource``),
the operator's opt-out (``--no-relay``) and the relay's own load. They become
events for ``relay.supernode``'s state machine (a pure table with hysteresis);
this module only executes the actions it returns:

- START_ROLES / STOP_ROLES: bind / close the STUN + TURN service (UDP and TCP on
  one port; ``RelayRole``) and, beside it, a STUN server with dial-back, so
  other nodes can judge their reachability against supernodes they find in
  the DHT (the advert's ``stun`` addresses, ``learned_stun_verdicts``);
- ACCEPT_ALLOCATIONS / REFUSE_ALLOCATIONS: the TURN core's admission policy
  (``TurnConfig.admission``, checked inside Allocate: 508 Insufficient
  Capacity through the core's own response path); existing allocations keep
  running;
- PUBLISH_ADVERT / WITHDRAW_ADVERT: the signed RELAY_ADVERT in the DHT, under
  ``relays/<node_id[0] % 16>``, republished with current load and uptime.

Invariants:
- never crash-stops: roles stop only after the machine has drained them
  (no allocations left, or the drain time limit), load above capacity only
  closes the gate (Skype's 2010 outage began with overloaded supernodes
  shutting down);
- ``status()`` always says the role taken and why, for ``p2pnode run``;
- every task has an owner: ``run()`` is awaited by its caller (a TaskGroup),
  ``close()`` releases every socket; nothing is fire-and-forget;
- time comes from an injected clock; the decision core (``relay.supernode.RoleCore``) is sans-IO.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from nat.endpoint import StunService
from nat.reachability import Reachability
from nat.runner import route_source_ip
from p2pnode import __version__
from p2pnode.connectivity.credentials import CredentialIssuer
from p2pnode.connectivity.relay_advert import RelayAdvert, encode_relay_advert
from p2pnode.connectivity.relays import relay_bucket, relay_subject
from p2pnode.connectivity.verdicts import Verdict, VerdictSource
from p2pnode.dht import DhtNode, PutResult
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, sign_record
from relay.allocation import FiveTuple
from relay.auth import rest_api_credentials
from relay.messages import RelayStatistics
from relay.policy import PeerAddressPolicy, parse_networks
from relay.quota import QuotaConfig
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService, ServiceAddresses
from relay.supernode import Action, Event, Hysteresis, Role, RoleCore, runs_roles

__all__ = [
    "AllocationGate",
    "RelayRole",
    "Supernode",
    "SupernodeConfig",
    "SupernodeStatus",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
SOFTWARE = f"p2pnode {__version__}"


@dataclass(frozen=True)
class SupernodeStatus:
    """What ``p2pnode run`` prints: the role, why, and what it is serving."""

    role: Role
    reason: str
    reachability: Reachability
    since: float
    udp: tuple[Address, ...] = ()
    tcp: tuple[Address, ...] = ()
    load: int = 0
    capacity: int = 0
    accepting: bool = False
    dial_back: tuple[Address, ...] = ()  # the advertised STUN server with dial-back

    def describe(self) -> str:
        text = f"role: {self.role.value} ({self.reason})"
        if runs_roles(self.role):
            where = ", ".join(f"{h}:{p}" for h, p in self.udp) or "-"
            gate = "accepting" if self.accepting else "refusing new allocations"
            text += f"; relay on {where} udp+tcp, {self.load}/{self.capacity} allocations, {gate}"
            if self.dial_back:
                text += "; dial-back STUN on " + ", ".join(f"{h}:{p}" for h, p in self.dial_back)
        return text


class AllocationGate:
    """The TURN core's admission policy (``TurnConfig.admission``): while closed, a new
    Allocate is refused with 508 inside the core; existing allocations carry on."""

    def __init__(self) -> None:
        self.accepting = True
        self.refused = 0

    def __call__(self, five_tuple: FiveTuple) -> bool:
        if not self.accepting:
            self.refused += 1
        return self.accepting


@dataclass(frozen=True)
class SupernodeConfig:
    """How the relay role runs when the node takes it."""

    host: str = "0.0.0.0"  # where STUN + TURN listen (UDP and TCP)
    port: int = 3478  # 0: ephemeral (tests)
    advertise_ip: str | None = None  # default: the IP the reachability check saw as ours
    realm: str = "p2pnode"
    capacity: int = 100  # allocations; above it new ones are refused, existing ones go on
    opt_out: bool = False  # --no-relay
    check_interval: float = 300.0  # seconds between reachability checks
    pending_check_interval: float = 30.0  # ... while a promotion or demotion is pending
    advert_ttl: int = 900
    republish_interval: float = 120.0  # the advert carries load and uptime: keep it fresh
    drain_limit: float = 3600.0  # a demoted relay stops after this even with calls left
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    allow_peers: tuple[str, ...] = ()  # CIDRs the relay may reach despite the deny list
    secret: bytes | None = None  # TURN REST secret; None: a fresh random one per start
    quota: QuotaConfig | None = None  # default: QuotaConfig sized to ``capacity``
    serve_dial_back: bool = True  # also a STUN server with dial-back, advertised as ``stun``
    dial_back_port: int | None = None  # None: ``port`` + 1 (ephemeral when ``port`` is 0)

    def dial_back_address(self) -> Address | None:
        """Where the dial-back STUN server listens while the node is a supernode."""
        if not self.serve_dial_back:
            return None
        if self.dial_back_port is not None:
            return (self.host, self.dial_back_port)
        return (self.host, self.port + 1 if 0 < self.port < 65535 else 0)


class RelayRole:
    """STUN + TURN on one port (UDP and TCP), gated, and the dial-back STUN server beside
    it; owned by the ``Supernode``."""

    def __init__(self, config: SupernodeConfig, relay_ip: str, secret: bytes) -> None:
        quota = config.quota or QuotaConfig(max_allocations=config.capacity)
        self.gate = AllocationGate()
        turn = TurnConfig(
            realm=config.realm,
            credentials=rest_api_credentials(secret),
            relay_ip=relay_ip,
            quota=quota,
            policy=PeerAddressPolicy(allow=parse_networks(config.allow_peers)),
            software=SOFTWARE,
            admission=self.gate,
        )
        loop_time = asyncio.get_running_loop().time
        self.server = TurnServer(turn, random.SystemRandom(), loop_time())
        self.service = RelayService(
            self.server, udp=[(config.host, config.port)], tcp=[(config.host, config.port)]
        )
        self.addresses = ServiceAddresses((), ())
        self._dial_back_listen = config.dial_back_address()
        self.dial_back: StunService | None = None

    async def start(self) -> ServiceAddresses:
        self.addresses = await self.service.start()
        if self._dial_back_listen is not None:
            try:
                self.dial_back = await StunService.start(self._dial_back_listen)
            except OSError as error:  # the relay still works; nobody learns a server from us
                logger.warning(
                    "dial-back STUN server cannot listen on %s:%d: %s; not advertising one",
                    *self._dial_back_listen,
                    error,
                )
        return self.addresses

    @property
    def dial_back_addresses(self) -> tuple[Address, ...]:
        return self.dial_back.addresses[:1] if self.dial_back is not None else ()

    def set_accepting(self, accepting: bool) -> None:
        self.gate.accepting = accepting

    @property
    def accepting(self) -> bool:
        return self.gate.accepting

    def statistics(self) -> RelayStatistics:
        return self.service.statistics()

    async def close(self) -> None:
        if self.dial_back is not None:
            await self.dial_back.close()
            self.dial_back = None
        await self.service.__aexit__(None, None, None)


class Supernode:
    """Feeds verdicts, opt-out and load to the state machine and carries out its actions."""

    def __init__(
        self,
        identity: Identity,
        dht: DhtNode,
        config: SupernodeConfig | None = None,
        *,
        verdicts: VerdictSource,
        clock: Callable[[], float] = time.time,
        load_interval: float = 5.0,
        dial_back_server: Address | None = None,
        serve_credentials: bool = True,
    ) -> None:
        """``dial_back_server``: a STUN server with dial-back this node already runs
        (``p2pnode run --serve-stun``); advertised instead of starting another.
        ``serve_credentials=False``: the caller serves the credentials RPC on the DHT
        itself (through ``self.issuer``): a DHT registers an RPC once, and a runtime that
        restarts this controller must not register it again."""
        self.identity = identity
        self.dht = dht
        self.config = config or SupernodeConfig()
        self._dial_back_server = dial_back_server
        if dial_back_server is not None:
            self.config = replace(self.config, serve_dial_back=False)
        self._verdicts = verdicts
        self._clock = clock
        self._load_interval = load_interval
        self._secret = self.config.secret or os.urandom(32)
        now = clock()
        self.core = RoleCore(
            self.config.hysteresis, self.config.capacity, self.config.drain_limit, now
        )
        self.issuer = CredentialIssuer(
            self._secret,
            self.config.realm,
            own_key=identity.public_key,
            unavailable=self._why_not_serving,
        )
        if serve_credentials:
            self.issuer.register(dht)  # a client answers UNAVAILABLE, saying why
        self.relay: RelayRole | None = None
        self._relay_ip: str | None = None
        self._roles_started = 0.0
        self._advertising = False
        self._seq = 0
        self._last_publish = -math.inf
        self._next_check = now
        self.last_put: PutResult | None = None
        self._shown: SupernodeStatus | None = None  # see status()
        self.publish_errors = 0
        if self.config.opt_out:
            self.core.feed(Event.OPT_OUT, now, "--no-relay")

    # ------------------------------------------------------------- status

    def status(self) -> SupernodeStatus:
        """The role taken and why. While a role change is being carried out (sockets
        binding, the advert being put) it is the status from before the change, so
        nobody reads "supernode" before the relay really runs."""
        if self._shown is not None:
            return self._shown
        return self._current_status()

    def _current_status(self) -> SupernodeStatus:
        relay = self.relay
        stats = relay.statistics() if relay is not None else None
        return SupernodeStatus(
            role=self.core.role,
            reason=self.core.reason,
            reachability=self.core.reachability,
            since=self.core.since,
            udp=self._public(relay.addresses.udp) if relay is not None else (),
            tcp=self._public(relay.addresses.tcp) if relay is not None else (),
            load=stats.allocations if stats is not None else 0,
            capacity=self.config.capacity,
            accepting=relay is not None and relay.accepting,
            dial_back=self._advertised_dial_back(),
        )

    def advert(self) -> RelayAdvert | None:
        """The advert we would publish now (None while no relay runs)."""
        relay = self.relay
        if relay is None:
            return None
        load = relay.statistics().allocations
        if not self._advertising or not relay.accepting:
            load = max(load, self.config.capacity)  # "no room": peers never pick it anew
        dht_port = self.dht.address[1]
        ip = self._relay_ip or "127.0.0.1"
        return RelayAdvert(
            udp=self._public(relay.addresses.udp),
            tcp=self._public(relay.addresses.tcp),
            dht=((ip, dht_port),),
            realm=self.config.realm,
            capacity=self.config.capacity,
            load=min(load, 1_000_000),
            uptime=int(max(self._clock() - self._roles_started, 0)),
            software=SOFTWARE,
            stun=self._advertised_dial_back(),
        )

    def _advertised_dial_back(self) -> tuple[Address, ...]:
        relay = self.relay
        if relay is None:
            return ()
        if self._dial_back_server is not None:
            return self._public((self._dial_back_server,))
        return self._public(relay.dial_back_addresses)[:1]

    def _public(self, bound: tuple[Address, ...]) -> tuple[Address, ...]:
        ip = self._relay_ip
        return tuple(((ip or host), port) for host, port in bound)[:4]

    def _why_not_serving(self) -> str | None:
        if self.relay is not None and self.relay.accepting:
            return None
        return f"{self.core.role.value}: {self.core.reason}"

    # ------------------------------------------------------------- inputs

    async def check_reachability(self) -> SupernodeStatus:
        """One verdict round (bounded by the verdict source's own time limit)."""
        try:
            verdict = await self._verdicts()
        except (OSError, ValueError) as error:
            verdict = Verdict(Reachability.UNKNOWN, None, f"check failed: {error}")
        now = self._clock()
        if verdict.ip is not None and self.relay is None:
            self._relay_ip = self.config.advertise_ip or verdict.ip
        await self._apply(lambda: self.core.verdict(verdict.status, verdict.detail, now))
        return self.status()

    async def opt_out(self) -> None:
        await self._apply(lambda: self.core.feed(Event.OPT_OUT, self._clock(), "operator"))

    async def opt_in(self) -> None:
        await self._apply(lambda: self.core.feed(Event.OPT_IN, self._clock(), "operator"))

    async def tick(self) -> SupernodeStatus:
        """Load and drain checks, and the advert's republication when due."""
        if self.relay is not None:
            allocations = self.relay.statistics().allocations
            now = self._clock()
            await self._apply(lambda: self.core.load(allocations, now))
            await self._apply(lambda: self.core.drain(allocations, now))
        if (
            self.relay is not None
            and self._advertising
            and self._clock() - self._last_publish >= self.config.republish_interval
        ):
            await self._publish()
        return self.status()

    async def run(self, stop: asyncio.Event) -> None:
        """Check reachability every ``check_interval``, load every ``load_interval``,
        until ``stop`` is set. The caller owns this coroutine (e.g. in a TaskGroup)."""
        while not stop.is_set():
            if self._clock() >= self._next_check:
                await self.check_reachability()
                interval = self.config.check_interval
                if self.core.state.streak > 0:  # a role change is pending: confirm it sooner
                    interval = min(interval, self.config.pending_check_interval)
                self._next_check = self._clock() + interval
            await self.tick()
            wait = min(self._load_interval, max(self._next_check - self._clock(), 0.0))
            try:
                async with asyncio.timeout(wait):
                    await stop.wait()
            except TimeoutError:
                continue

    async def close(self) -> None:
        """Stop serving now (the process is going away); releases every socket."""
        if self.relay is not None:
            await self.relay.close()
            self.relay = None

    # ------------------------------------------------------------ actions

    async def _execute(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if action is Action.START_ROLES:
                if not await self._start_roles():
                    break
            elif action is Action.STOP_ROLES:
                await self.close()
            elif action in (Action.ACCEPT_ALLOCATIONS, Action.REFUSE_ALLOCATIONS):
                if self.relay is not None:
                    self.relay.set_accepting(action is Action.ACCEPT_ALLOCATIONS)
            elif action is Action.PUBLISH_ADVERT:
                self._advertising = True
                await self._publish()
            elif action is Action.WITHDRAW_ADVERT:
                self._advertising = False
                await self._publish()
        if actions:
            logger.info("supernode: %s", self._current_status().describe())

    async def _apply(self, transition: Callable[[], Sequence[Action]]) -> None:
        """Feed the core (``transition``) and carry out its actions; ``status()`` shows
        the status from before until they are done."""
        self._shown = self._current_status()
        try:
            await self._execute(transition())
        finally:
            self._shown = None

    async def _start_roles(self) -> bool:
        host = self.config.host
        ip = self.config.advertise_ip or self._relay_ip
        if ip is None:
            ip = host if host not in ("0.0.0.0", "::") else route_source_ip(("192.0.2.1", 9))
        self._relay_ip = ip
        relay = RelayRole(self.config, ip, self._secret)
        try:
            await relay.start()
        except OSError as error:
            # Cannot serve here: say so, and stop trying (the operator must act).
            logger.warning("relay role cannot start on %s:%d: %s", host, self.config.port, error)
            await relay.close()
            now = self._clock()
            self.core.feed(Event.OPT_OUT, now)
            self.core.drain(0, now)  # nothing ever ran: RETIRING -> OPTED_OUT at once
            self.core.reason = f"relay cannot listen on {host}:{self.config.port}: {error}"
            return False
        self.relay = relay
        self._roles_started = self._clock()
        return True

    async def _publish(self) -> None:
        advert = self.advert()
        if advert is None:
            return
        now = self._clock()
        self._seq = max(self._seq + 1, int(now))
        ttl = self.config.advert_ttl if self._advertising else min(self.config.advert_ttl, 120)
        record = sign_record(
            self.identity,
            RecordKind.RELAY_ADVERT,
            relay_subject(relay_bucket(self.identity.node_id)),
            encode_relay_advert(advert),
            seq=self._seq,
            now=now,
            ttl=ttl,
        )
        self._last_publish = now
        try:
            self.last_put = await self.dht.put(record)
        except (TimeoutError, OSError, RuntimeError) as error:
            self.publish_errors += 1
            logger.warning("publishing the relay advert failed: %s", error)

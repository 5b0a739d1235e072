"""The supernode role controller: promote a publicly reachable node to relay, visibly, safely.

Inputs: the reachability verdict (``nat.reachability`` through a ``VerdictSource``),
the operator's opt-out (``--no-relay``) and the relay's own load. They become
events for ``relay.supernode``'s state machine (a pure table with hysteresis);
this module only executes the actions it returns:

- START_ROLES / STOP_ROLES: bind / close the STUN + TURN service (UDP and TCP on
  one port; ``RelayRole``) and, beside it, a STUN server with dial-back, so
  other nodes can judge their reachability against supernodes they find in
  the DHT (the advert's ``stun`` addresses, ``learned_stun_verdicts``);
- ACCEPT_ALLOCATIONS / REFUSE_ALLOCATIONS: the gate in front of new Allocate
  requests (508 Insufficient Capacity); existing allocations keep running;
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
- time comes from an injected clock; the decision core (``RoleCore``) is sans-IO.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from nat.endpoint import StunService
from nat.reachability import Reachability, ReachabilityEstimator
from nat.runner import check_reachability, route_source_ip
from nat.stun import StunClass, StunMessage, StunMethod, encode_message
from nat.stun.attributes import ErrorCode, Software
from p2pnode import __version__
from p2pnode.connectivity.credentials import CredentialIssuer
from p2pnode.connectivity.relay_advert import RelayAdvert, encode_relay_advert
from p2pnode.connectivity.relays import relay_bucket, relay_subject
from p2pnode.dht import DhtNode, PutResult
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, sign_record
from relay.allocation import FiveTuple
from relay.auth import rest_api_credentials
from relay.messages import Output, RelayStatistics, ToClient, TurnErrorCode
from relay.policy import PeerAddressPolicy, parse_networks
from relay.quota import QuotaConfig
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService, ServiceAddresses
from relay.supernode import (
    Action,
    Event,
    Hysteresis,
    Role,
    SupernodeState,
    load_event,
    runs_roles,
    step,
)

__all__ = [
    "GatedTurnServer",
    "RelayRole",
    "RoleCore",
    "Supernode",
    "SupernodeConfig",
    "SupernodeStatus",
    "Verdict",
    "VerdictSource",
    "fixed_verdict",
    "learned_stun_verdicts",
    "stun_verdicts",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
SOFTWARE = f"p2pnode {__version__}"
_ALLOCATE_REQUEST = b"\x00\x03"  # STUN message type: Allocate, class request (RFC 8656 §17)


# ----------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """One reachability verdict and the IP it was obtained for (our public IP if PUBLIC)."""

    status: Reachability
    ip: str | None = None
    detail: str = ""


VerdictSource = Callable[[], Awaitable[Verdict]]


def fixed_verdict(status: Reachability, ip: str | None = None, detail: str = "") -> VerdictSource:
    """A verdict the operator (``--public IP``) or a test asserts, instead of measuring it."""

    async def source() -> Verdict:
        return Verdict(status, ip, detail or f"{status.value} (set by configuration)")

    return source


def _dial_back_verdicts(
    servers_now: Callable[[], tuple[tuple[Address, ...], str]],
    min_agree: int,
    none_known: str,
) -> VerdictSource:
    """Each call asks the servers ``servers_now()`` names (with a note on where they came
    from, or "") to dial us back; one estimator is kept across rounds."""
    estimator = ReachabilityEstimator(min_agree=min_agree)

    async def source() -> Verdict:
        servers, origin = servers_now()
        if not servers:
            status = estimator.status(asyncio.get_running_loop().time())
            return Verdict(status, None, none_known)
        report = await check_reachability(servers, estimator=estimator)
        votes = [v for v in report.votes if v is not None]
        where = f" ({origin})" if origin else ""
        detail = (
            f"{len(votes)} of {len(servers)} servers voted{where}, {report.min_agree} must agree"
        )
        return Verdict(report.status, report.local_address[0], detail)

    return source


def stun_verdicts(servers: Sequence[Address], *, min_agree: int = 3) -> VerdictSource:
    """Dial-back checks against ``servers`` only; ``min_agree`` is lowered to their number."""
    given = tuple(servers)
    return _dial_back_verdicts(
        lambda: (given, ""),
        min(min_agree, max(len(given), 1)),
        "no STUN servers to check against",
    )


MAX_LEARNED_SERVERS = 8  # dial-back servers asked per round, configured ones first


def learned_stun_verdicts(
    configured: Sequence[Address],
    learned: Callable[[], Sequence[Address]],
    *,
    min_agree: int = 3,
) -> VerdictSource:
    """Dial-back checks against ``configured`` servers plus those ``learned`` now.

    ``learned()`` gives the dial-back STUN servers of supernodes found in the DHT
    (``RelayFinder.dial_back_servers``), so a node needs no hand-given servers once
    a few supernodes exist. Unlike ``stun_verdicts``, ``min_agree`` is never
    lowered to the number of servers known: a verdict others rely on needs that
    many agreeing servers. Votes are kept per server across rounds (the
    estimator's hysteresis), so a decided status survives a round in which fewer
    servers are known, until its votes age out.
    """
    fixed = tuple(dict.fromkeys(configured))

    def servers_now() -> tuple[tuple[Address, ...], str]:
        found = tuple(dict.fromkeys(a for a in learned() if a not in fixed))
        servers = (fixed + found)[: max(MAX_LEARNED_SERVERS, len(fixed))]
        return servers, f"{len(fixed)} given, {len(servers) - len(fixed)} found in the DHT"

    return _dial_back_verdicts(
        servers_now,
        min_agree,
        "no dial-back STUN servers known yet (none given with --stun, no supernode "
        "advertising one found in the DHT)",
    )


# --------------------------------------------------------------- the core


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


class RoleCore:
    """Sans-IO: events in (with ``now``), the machine's actions out, and the reason kept."""

    def __init__(self, hysteresis: Hysteresis, capacity: int, drain_limit: float, now: float):
        self.hysteresis = hysteresis
        self.capacity = capacity
        self.drain_limit = drain_limit
        self.state = SupernodeState()
        self.reason = "starting: no reachability verdict yet"
        self.since = now
        self.reachability = Reachability.UNKNOWN
        self._drain_started: float | None = None

    @property
    def role(self) -> Role:
        return self.state.role

    def feed(self, event: Event, now: float, why: str = "") -> tuple[Action, ...]:
        transition = step(self.state, event, self.hysteresis)
        changed = transition.state.role is not self.state.role
        self.state = transition.state
        if changed:
            self.since = now
            self.reason = transition.reason + (f": {why}" if why else "")
            if self.state.role in (Role.DRAINING, Role.RETIRING):
                if self._drain_started is None:
                    self._drain_started = now
            else:
                self._drain_started = None
        elif transition.reason != "no change":  # a streak is building: say so
            self.reason = transition.reason + (f": {why}" if why else "")
        return transition.actions

    def verdict(self, verdict: Verdict, now: float) -> tuple[Action, ...]:
        """Only PUBLIC counts as public: UNKNOWN must never promote (nor keep) a relay."""
        self.reachability = verdict.status
        event = (
            Event.VERDICT_PUBLIC
            if verdict.status is Reachability.PUBLIC
            else Event.VERDICT_NOT_PUBLIC
        )
        actions = self.feed(event, now, verdict.detail)
        if self.role is Role.CANDIDATE and self.state.streak == 1:
            needed = self.hysteresis.promote_after
            self.reason = f"{event.value} (1 of {needed} needed)" + (
                f": {verdict.detail}" if verdict.detail else ""
            )
        if self.role is Role.CLIENT and not actions and self.state.streak == 0:
            self.reason = f"reachability {verdict.status.value}" + (
                f": {verdict.detail}" if verdict.detail else ""
            )
        return actions

    def load(self, allocations: int, now: float) -> tuple[Action, ...]:
        event = load_event(allocations, self.capacity, self.role, self.hysteresis)
        if event is None:
            return ()
        return self.feed(event, now, f"{allocations} of {self.capacity} allocations")

    def drain(self, allocations: int, now: float) -> tuple[Action, ...]:
        """DRAINED when nothing is left, DRAIN_TIMEOUT after ``drain_limit``; else nothing."""
        if self.role not in (Role.DRAINING, Role.RETIRING) or self._drain_started is None:
            return ()
        if allocations == 0:
            return self.feed(Event.DRAINED, now)
        if now - self._drain_started >= self.drain_limit:
            return self.feed(Event.DRAIN_TIMEOUT, now, f"{allocations} allocations cut")
        return ()


# ------------------------------------------------------------ the relay role


class GatedTurnServer(TurnServer):
    """The TURN core with a gate on new allocations: closed, a fresh Allocate gets 508 while
    every existing allocation (Refresh, permissions, channels, data) carries on."""

    accepting: bool = True
    refused_by_gate: int = 0

    def handle_client(self, five_tuple: FiveTuple, data: bytes, now: float) -> list[Output]:
        if (
            not self.accepting
            and data[:2] == _ALLOCATE_REQUEST
            and len(data) >= 20
            and self.relayed_address(five_tuple) is None
        ):
            # RFC 8656 §7.2: "If the server cannot satisfy the request, then the server
            # rejects the request with a 508 (Insufficient Capacity) error". Sent before
            # authentication, so no MESSAGE-INTEGRITY: it costs a refused client nothing.
            self.refused_by_gate += 1
            code = TurnErrorCode.INSUFFICIENT_CAPACITY
            response = StunMessage(
                StunMethod.ALLOCATE,
                StunClass.ERROR,
                data[8:20],
                (ErrorCode(int(code), code.reason), Software(SOFTWARE)),
            )
            return [ToClient(five_tuple, encode_message(response, fingerprint=True))]
        return super().handle_client(five_tuple, data, now)


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
        turn = TurnConfig(
            realm=config.realm,
            credentials=rest_api_credentials(secret),
            relay_ip=relay_ip,
            quota=quota,
            policy=PeerAddressPolicy(allow=parse_networks(config.allow_peers)),
            software=SOFTWARE,
        )
        loop_time = asyncio.get_running_loop().time
        self.server = GatedTurnServer(turn, random.SystemRandom(), loop_time())
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
        self.server.accepting = accepting

    @property
    def accepting(self) -> bool:
        return self.server.accepting

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
    ) -> None:
        """``dial_back_server``: a STUN server with dial-back this node already runs
        (``p2pnode run --serve-stun``); advertised instead of starting another."""
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
        await self._apply(lambda: self.core.verdict(verdict, now))
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

"""The SIP <-> P2P bridge as a service of ``p2pnode run`` (``[sip]`` ``bridge*``, ``foreign_*``).

Why a service of its own beside ``sip``: the bridge needs the running gateway
(its address, its account store), the node's signalling (its homes) and the
peer app (the ICE plan of our relay); it is started after all of them and
restarted alone when it fails, without taking the phones' registrations down.

What it builds at each start, one bridge per P2P identity it speaks as:

* one per ``bridge_hosted`` account (``BridgeCallers.HOSTED``): the identity
  the gateway hosts for that account (``hosted.identity_of``, the key its login
  claim is made with). A P2P call to it rings the account's phones; that
  account's phones dial P2P logins, peer ids, trusted ENUM numbers and DIDs as
  it.
* one with the hosted identity of the bridge account itself (the gateway's
  identity): for other SIP networks (behind the operator's
  ``ForeignCallPolicy``: off, allow-list of From domains, rate) and, with
  ``bridge_local_calls``, for the local accounts that have no bridge of their
  own (``BridgeCallers.OTHERS``; the callee is told the account's URI,
  verified). It refuses P2P calls (nobody is behind it to ring).

Each bridge has its own ``SignallingService`` for its identity (attached to
the node's own homes: the node itself when it serves as a home), its own
``BridgedCallService`` on that signalling's "call" channel, and its own
``BridgeUserAgent`` registered at the gateway as ``bridge_account``; the
gateway routes what it does not host to that account and forks to every
bridge, each taking only its callers. The bridge account is made at the first
start; its password is generated at every start and kept in memory.

Texts: each ``bridge_hosted`` bridge also carries its login's SIP MESSAGEs
<-> E2E chat of its hosted identity (``sip_bridge_chat``: a chat service
with its own stores under ``<home>/sip-bridge/<peer id>/`` on that bridge's
signalling, and a ``ChatBridge`` on its UA; held texts go out when the
gateway reports the login's next REGISTER). The gateway's own bridge refuses
texts of accounts without a bridge (``NO_CHAT``).

Observability: every bridge event goes to the node's event stream as a
``SipBridgeEvent``; ``statistics()`` keeps totals across restarts (so the
Prometheus counters built from it stay monotonic) and the last
``MAX_RECENT_CALLS`` ended calls for ``GET /api/sip/bridge``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from p2pnode.app.config import NodeConfig
from p2pnode.app.node import Node
from p2pnode.app.peer_config import ChatSection, PresenceSection
from p2pnode.app.peer_services import PeerApp, home_role
from p2pnode.app.services import DhtService, directory_of
from p2pnode.app.sip_bridge_chat import (
    BridgeChat,
    BridgeChatSnapshot,
    refuse_texts,
    start_chat,
)
from p2pnode.app.sip_bridge_stats import (
    TEXT_COUNTS,
    BridgedCall,
    BridgeSnapshot,
    SipBridgeEvent,
    SipBridgeStatistics,
    Totals,
    bridge_metrics,
    live_calls,
)
from p2pnode.app.sip_service import SipService
from p2pnode.connectivity.contact import Capability, HomeEntry
from p2pnode.connectivity.homes import PeerConfig
from p2pnode.connectivity.signalling import SignalChannel, SignallingService
from p2pnode.gateways.sip.accounts import AccountError, AccountStore
from p2pnode.gateways.sip.bridge import (
    BridgedCallService,
    BridgeEvent,
    BridgeUserAgent,
    SipP2pBridge,
)
from p2pnode.gateways.sip.bridge_routing import BridgeCallers, ForeignCallPolicy, PeerResolver
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.useragent import UaError
from p2pnode.identity import Identity, public_key_from_peer_id
from p2pnode.sessions.call_config import CallConfig, MediaPath, NonContactPolicy

__all__ = [
    "MAX_RECENT_CALLS",
    "BridgeSnapshot",
    "BridgedCall",
    "SipBridgeEvent",
    "SipBridgeService",
    "SipBridgeStatistics",
    "add_sip_bridge",
    "bridge_metrics",
]

logger = logging.getLogger(__name__)

MAX_RECENT_CALLS = 64  # ended calls kept for the control API
REGISTER_EXPIRES = 300  # seconds a bridge's registration at the gateway lasts
HOMES_WAIT = 10.0  # seconds a bridge's home search waits for the node's own homes
REGISTER_EVERY = 120.0  # seconds between re-registrations (well inside the expiry)
# The P2P leg's codecs; each call moves its phone's codec first (bridge_codecs.p2p_codec_order),
# so a listed codec the phone speaks passes through untouched (aiortc 1.16 has G.722).
BRIDGE_CODECS = ("PCMU", "PCMA", "opus", "G722")


@dataclass
class _Bridge:
    login: str
    callers: BridgeCallers
    identity: Identity
    signalling: SignallingService
    channel: SignalChannel
    calls: BridgedCallService
    ua: BridgeUserAgent
    bridge: SipP2pBridge
    chat: BridgeChat | None = None  # texts (hosted identities only: sip_bridge_chat)


def _client_address(address: tuple[str, int]) -> tuple[str, int]:
    """Where our own UA reaches a gateway bound to ``address`` (a wildcard: loopback)."""
    host, port = address[:2]
    if host == "0.0.0.0":
        return "127.0.0.1", port
    if host == "::":
        return "::1", port
    return host, port


class SipBridgeService:
    """Hosts the bridges of ``[sip]`` (see the module docstring)."""

    name = "sip-bridge"

    def __init__(
        self,
        home: Path,
        config: NodeConfig,
        sip: SipService,
        dht: DhtService,
        node_service: Callable[[str], object],
        *,
        emit: Callable[[object], None],
    ) -> None:
        self.home = home
        self.config = config
        self.section = config.sip
        self.sip = sip
        self.dht = dht
        self.node_service = node_service
        self.emit = emit
        self._bridges: list[_Bridge] = []
        self._gateway_stopped = asyncio.Event()  # the one of the gateway registered at
        self._retired = Totals()
        self._recent: collections.deque[BridgedCall] = collections.deque(maxlen=MAX_RECENT_CALLS)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to bind yet: the bridges are built in ``run`` once the gateway runs."""

    async def _build(self) -> None:
        gateway, store = self.sip.gateway, self.sip.store
        if gateway is None or store is None or gateway.address is None:
            raise RuntimeError("[sip] bridge: the SIP gateway is not running")
        section = self.section
        wanted = [(login, BridgeCallers.HOSTED) for login in section.bridge_hosted]
        if section.bridge_local_calls:  # foreign callers too, under ForeignCallPolicy
            wanted.append((section.bridge_account, BridgeCallers.OTHERS))
        elif section.foreign_calls:
            wanted.append((section.bridge_account, BridgeCallers.FOREIGN))
        identities = []
        for login, callers in wanted:
            account = store.get(login) if callers is BridgeCallers.HOSTED else None
            if callers is BridgeCallers.HOSTED and account is None:
                raise RuntimeError(f"[sip] bridge_hosted: no account {login} (sip account add)")
            identities.append((login, callers, account))
        password = self._bridge_password(store)
        account = store.get(self.section.bridge_account)
        assert account is not None
        server = _client_address(gateway.address)
        self._gateway_stopped = self.sip.stopped
        try:
            for login, callers, hosted in identities:
                identity = identity_of(hosted if hosted is not None else account)
                self._bridges.append(
                    await self._bridge(login, callers, identity, password, store.realm, server)
                )
        except BaseException:
            await self.stop()
            raise

    def _bridge_password(self, store: AccountStore) -> str:
        """The bridge account's password, new at every start and kept in memory only.

        Only our own UAs use it. The account is made once and keeps its hosted
        identity (the gateway's P2P identity); a password made at each start is
        never on disk and a reset elsewhere (the app's SIP view) cannot lock the
        bridge out for longer than one restart.
        """
        login = self.section.bridge_account
        try:
            if store.get(login) is None:
                _, password = store.add(login, None, randbytes=os.urandom)
            else:
                password = store.reset_password(login, None, randbytes=os.urandom)
        except AccountError as error:
            raise RuntimeError(f"[sip] bridge_account: {error}") from None
        return password

    async def _bridge(
        self,
        login: str,
        callers: BridgeCallers,
        identity: Identity,
        password: str,
        domain: str,
        server: tuple[str, int],
    ) -> _Bridge:
        presence = self.config.presence
        assert isinstance(presence, PresenceSection)
        serve = home_role(self.config) == "serve"
        node_signalling = self.node_service("signalling")
        peer = self.node_service("peer")
        assert isinstance(node_signalling, SignallingService) and isinstance(peer, PeerApp)

        async def node_homes() -> Sequence[HomeEntry]:
            """The node's own homes (itself when serving); a node still attaching gets
            ``HOMES_WAIT`` seconds, so the bridge does not sit out a failed search's backoff."""
            for _ in range(int(HOMES_WAIT / 0.1)):
                if node_signalling.homes():
                    break
                await asyncio.sleep(0.1)
            return node_signalling.homes()

        host = presence.listen.rpartition(":")[0].strip("[]")
        signalling = SignallingService(
            identity,
            self.dht.node,
            listen=(host, 0),
            find_homes=node_homes,
            capabilities=Capability.CHAT | Capability.AUDIO,
            peer_config=PeerConfig(wanted=1 if serve else 2),
        )
        await signalling.start()
        parts: list[object] = [signalling]
        try:
            link = await peer.link_config()
            foreign = callers is not BridgeCallers.HOSTED  # the gateway's identity
            config = CallConfig(
                paths=(MediaPath.from_plan(link.ice),),
                audio_codecs=BRIDGE_CODECS,
                non_contacts=NonContactPolicy.REFUSE if foreign else NonContactPolicy.RING,
            )
            channel = signalling.channel("call")
            calls = BridgedCallService(
                identity.peer_id, config, channel.send, is_contact=lambda _peer: not foreign
            )
            await calls.__aenter__()
            parts.append(calls)
            ua = BridgeUserAgent(
                self.section.bridge_account, password, domain, server, host=server[0]
            )
            parts.append(ua)
            await ua.start()
            await ua.register(expires=REGISTER_EXPIRES)
            resolver = self._resolver(domain)
            bridge = self._controller(login, callers, calls, ua, resolver)
            chat = None
            if callers is BridgeCallers.HOSTED:
                section = self.config.chat
                assert isinstance(section, ChatSection)
                chat = await start_chat(
                    self.home, login, identity, self.dht, signalling, section, ua, resolver.peer_id
                )
                parts.append(chat)
        except BaseException:
            await _close(parts)
            raise
        if callers is BridgeCallers.HOSTED and self.sip.presence is not None:
            # the phones' registration state, live to the watchers of the hosted identity
            self.sip.presence.attach(login, signalling.set_presence)
        return _Bridge(login, callers, identity, signalling, channel, calls, ua, bridge, chat)

    def _resolver(self, domain: str) -> PeerResolver:
        section = self.section
        trusted = frozenset(public_key_from_peer_id(p) for p in self.config.enum.trust)
        return PeerResolver(
            directory_of(self.dht, trusted),
            gateway_domain=domain,
            dids=section.dids,
            allow_unverified=section.bridge_unverified_logins,
        )

    def _controller(
        self,
        login: str,
        callers: BridgeCallers,
        calls: BridgedCallService,
        ua: BridgeUserAgent,
        resolver: PeerResolver,
    ) -> SipP2pBridge:
        section = self.section
        bridge = SipP2pBridge(
            calls,
            ua,
            login,
            resolve=resolver.peer_id,
            ring_timeout=section.bridge_ring_timeout,
            foreign=ForeignCallPolicy(
                enabled=section.foreign_calls,
                allow_domains=frozenset(section.foreign_domains),
                per_minute=section.foreign_per_minute,
            ),
            callers=callers,
            own_bridges=frozenset(section.bridge_hosted) | {section.bridge_account},
        )
        bridge.on_event = lambda event: self._on_event(login, event)
        return bridge

    async def run(self) -> None:
        """Wait for the gateway (a gateway that cannot bind yet is retried by the node
        without failing the bridge), build the bridges, then every bridge's controller,
        signal pump and re-registration until stopped."""
        await self.sip.started.wait()
        await self._build()
        gateway = self.sip.gateway
        assert gateway is not None
        own = frozenset(self.section.bridge_hosted)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._watch_gateway())
            for bridge in self._bridges:
                tasks.create_task(bridge.bridge.run())
                tasks.create_task(_pump(bridge))
                tasks.create_task(_reregister(bridge.ua))
                tasks.create_task(_drain(bridge.bridge))
                if bridge.chat is not None:
                    # A held text goes out when its login's phone registers.
                    gateway.registration_listeners.append(bridge.chat.bridge.registered)
                    tasks.create_task(bridge.chat.run())
                else:
                    tasks.create_task(refuse_texts(bridge.ua, own))

    async def _watch_gateway(self) -> None:
        """A restarted ``sip`` service is a new gateway (no registrations, perhaps another
        port): end, so the node restarts the bridges against it."""
        await self._gateway_stopped.wait()
        raise RuntimeError("the SIP gateway restarted: the bridges follow")

    async def stop(self) -> None:
        bridges, self._bridges = self._bridges, []
        gateway = self.sip.gateway
        for bridge in bridges:
            if self.sip.presence is not None:
                self.sip.presence.detach(bridge.login, bridge.signalling.set_presence)
            self._retired.add(bridge.bridge.statistics())
            if bridge.chat is not None:
                self._retired.add_texts(bridge.chat.bridge.statistics())
            if bridge.chat is not None and gateway is not None:
                with contextlib.suppress(ValueError):
                    gateway.registration_listeners.remove(bridge.chat.bridge.registered)
            await _close([bridge.signalling, bridge.calls, bridge.ua, bridge.chat])

    # -- observations ---------------------------------------------------------------------

    def _on_event(self, login: str, event: BridgeEvent) -> None:
        if event.summary is not None:
            self._recent.append(BridgedCall(login, event.call_id, event.summary))
            self._retired.add_ended(event.summary)  # its RTCP counts, for the counters
        self.emit(SipBridgeEvent(login, event.call_id, event.what, event.detail, event.summary))

    def chats(self) -> tuple[BridgeChatSnapshot, ...]:
        """The texts of each hosted identity (``sip_bridge_chat``)."""
        return tuple(b.chat.snapshot() for b in self._bridges if b.chat is not None)

    def statistics(self) -> SipBridgeStatistics:
        totals = self._retired.copy()
        snapshots = []
        held = 0
        for chat in self.chats():
            totals.add_texts(chat.statistics)
            held += chat.statistics.held
        for bridge in self._bridges:
            stats = bridge.bridge.statistics()
            totals.add(stats)
            homes = len(bridge.signalling.homes())
            snapshots.append(
                BridgeSnapshot(bridge.login, bridge.callers, bridge.identity.peer_id, homes, stats)
            )
        v = totals.values
        live = tuple(
            call
            for b in self._bridges
            for call in live_calls(b.login, b.bridge.ua, b.bridge.call_legs())
        )
        rtcp_sent, rtcp_received = totals.rtcp_totals(live)
        return SipBridgeStatistics(
            account=self.section.bridge_account,
            active_calls=sum(s.statistics.active_calls for s in snapshots),
            calls=tuple(
                (d, m, n)
                for (d, m), n in sorted(
                    totals.calls.items(), key=lambda i: (i[0][0].value, i[0][1].value)
                )
            ),
            refusals=tuple(sorted(totals.refusals.items())),
            packets_from_phone=v["packets_from_phone"],
            packets_to_phone=v["packets_to_phone"],
            lost=v["lost"],
            passthrough_frames=v["passthrough_frames"],
            transcoded_frames=v["transcoded_frames"],
            digits_from_phone=v["digits_from_phone"],
            digits_to_phone=v["digits_to_phone"],
            digits_dropped=v["digits_dropped"],
            bridges=tuple(snapshots),
            recent=tuple(self._recent),
            texts=tuple((what, totals.texts[what]) for what in TEXT_COUNTS),
            texts_held=held,
            live=live,
            rtcp_sent=rtcp_sent,
            rtcp_received=rtcp_received,
        )


async def _close(parts: Sequence[object]) -> None:
    """Close what one bridge opened, last first; one failing part does not keep the rest."""
    for part in reversed(parts):
        with contextlib.suppress(Exception):
            if isinstance(part, BridgeChat):
                await part.stop()
            elif isinstance(part, BridgeUserAgent):
                await part.close()
            elif isinstance(part, BridgedCallService):
                await part.__aexit__(None, None, None)
            elif isinstance(part, SignallingService):
                await part.stop()


async def _pump(bridge: _Bridge) -> None:
    """Call signals for the bridge's identity, into its calls service."""
    while True:
        delivery = await bridge.channel.receive()
        await bridge.calls.handle_signal(delivery.sender, delivery.payload)


async def _reregister(ua: BridgeUserAgent) -> None:
    """Keep the bridge's registration at the gateway alive (a failed one is retried)."""
    while True:
        await asyncio.sleep(REGISTER_EVERY)
        try:
            await ua.register(expires=REGISTER_EXPIRES)
        except (OSError, UaError, ValueError) as error:
            logger.warning("sip bridge registration failed: %s", type(error).__name__)


async def _drain(bridge: SipP2pBridge) -> None:
    """The service reads events through ``on_event``; the bridge's own queue is emptied."""
    while True:
        await bridge.events.get()


def add_sip_bridge(
    home: Path, config: NodeConfig, node: Node, sip: SipService, dht: DhtService
) -> SipBridgeService | None:
    """Add the bridge service after ``sip`` when ``[sip]`` bridges (see ``SipSection.bridging``)."""
    presence = config.presence
    assert isinstance(presence, PresenceSection)
    if not config.sip.bridging(presence.enabled):
        return None
    service = SipBridgeService(home, config, sip, dht, node.service, emit=node.emit)
    node.add(service)
    return service

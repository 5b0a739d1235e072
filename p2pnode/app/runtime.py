"""Builds a ``Node`` from a ``NodeConfig``: which services run, in which order, wired how.

Order (started first to last, stopped in reverse): dht (required: no node
without its socket), stun (serve_stun), relay-search, supernode (uses the DHT,
the STUN server and the relays found), turn (a standalone TURN server,
required when configured: an operator who asked for it on a port wants to
know at once that it cannot listen), enum (the DNS gateway), control (the
local API, once everything it reports on exists), metrics. A section turned
off means its service is not hosted at all.

``reload`` (SIGHUP) applies what can change without a restart: log levels and
format; everything else is reported as needing a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from p2pnode.app.config import NodeConfig, default_control_port, hostport
from p2pnode.app.control import ControlContext, ControlService
from p2pnode.app.gateway import EnumDnsService
from p2pnode.app.logs import configure_logging
from p2pnode.app.metrics import MetricsService
from p2pnode.app.node import Node
from p2pnode.app.peer_services import add_peer_services, effective_config
from p2pnode.app.roles import SupernodeService, TurnService, role_options
from p2pnode.app.services import DhtService, RelaySearchService, StunServerService
from p2pnode.app.sip_bridge import add_sip_bridge
from p2pnode.app.sip_service import SipService
from p2pnode.app.web.server import add_web_service
from p2pnode.identity import Identity, public_key_from_peer_id

__all__ = ["Assembly", "assemble", "reload"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assembly:
    """The node and its services, for the CLI's printing and for tests."""

    config: NodeConfig
    node: Node
    identity: Identity
    dht: DhtService
    stun: StunServerService | None
    relays: RelaySearchService | None
    supernode: SupernodeService | None
    turn: TurnService | None
    enum: EnumDnsService | None
    control: ControlService | None
    metrics: MetricsService | None


def assemble(home: Path, config: NodeConfig, identity: Identity) -> Assembly:
    config = effective_config(config)  # [presence] attaching: the DHT as a client
    config, unground = config.for_node_id(identity.node_id)  # id puzzle: else a DHT client
    if unground is not None:
        logger.warning("%s", unground)
    node = Node(drain_limit=config.relay.drain_limit)
    dht = DhtService(identity, home, config)
    node.add(dht, required=True)
    options = role_options(config)
    stun = None
    if options.serve_stun is not None:
        stun = StunServerService(options.serve_stun, options.stun_alt_ip)
        node.add(stun, required=True)
    relays = None
    if options.find_relays:
        wanted = options.min_agree if options.supernode is not None else 0
        relays = RelaySearchService(identity, dht, wanted_dial_back=wanted)
        node.add(relays)
    supernode = None
    if options.supernode is not None:
        supernode = SupernodeService(
            identity,
            dht,
            options,
            learned=relays.dial_back_servers if relays is not None else None,
            stun=stun,
            emit=node.emit,
        )
        node.add(supernode)
    turn = None
    if config.turn.enabled:
        turn = TurnService(config)
        node.add(turn, required=True)
    enum = None
    if config.enum.enabled:
        enum = EnumDnsService(dht, config)
        node.add(enum)
    add_peer_services(home, config, identity, node, dht, relays)  # [presence]: signalling
    if config.sip.enabled:  # [sip]: the SIP gateway (sip_service.py), its bridge (sip_bridge.py)
        bridge = config.sip.bridging(config.presence.enabled)
        trust = frozenset(public_key_from_peer_id(p) for p in config.enum.trust)
        sip = SipService.for_node(home, config.sip, dht, bridge=bridge, trusted=trust)
        node.add(sip)
        add_sip_bridge(home, config, node, sip, dht)
    control = None
    if config.control.enabled:
        port = config.control.port
        control = ControlService(
            home, config.control.host, default_control_port(home) if port is None else port
        )
        node.add(control)
    add_web_service(home, config.web, identity, node, control)  # [web]: the desktop app
    metrics = None
    if config.metrics.listen is not None:
        host, port = hostport(config.metrics.listen)
        metrics = MetricsService(node, host, port)
        node.add(metrics)
    if control is not None:
        control.ctx = ControlContext(
            node=node,
            identity=identity,
            dht=dht,
            supernode=supernode,
            relays=relays,
            trusted=frozenset(public_key_from_peer_id(p) for p in config.enum.trust),
        )
    return Assembly(
        config, node, identity, dht, stun, relays, supernode, turn, enum, control, metrics
    )


def reload(old: NodeConfig, new: NodeConfig) -> list[str]:
    """Apply what can change while running; the sections that need a restart, by name."""
    configure_logging(new.log.level, new.log.format, new.log.modules)
    changed = [
        name
        for name in NodeConfig.model_fields
        if name != "log" and getattr(old, name) != getattr(new, name)
    ]
    for name in changed:
        logger.warning("config section=%s changed: takes effect at the next start", name)
    return changed

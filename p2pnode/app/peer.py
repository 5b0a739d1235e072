"""``P2PNode``: one peer wired by hand: identity, DHT node, STUN server, supernode role.

Kept for the tests and the demo that drive these parts directly; `p2pnode run`
hosts the same parts as services of ``p2pnode.app.node.Node`` (``app.services``).

Each part is started in ``start`` and stopped in reverse order in ``stop``;
``run(stop)`` is the node's long-running life (the supernode controller's
reachability checks, load checks and advert republication) and is owned by
its caller, so nothing runs fire-and-forget.

Invariants: the identity comes from the node's home (created only by
``p2pnode init`` or ``create=True``); the DHT routing table is saved in the
home as JSON (``dht-contacts.json``) and reloaded on the next start, so a
restarted node keeps both its identity (hence node id) and its neighbours.
The supernode role is never taken without a reachability verdict (measured
against STUN servers with dial-back, given by the operator and/or advertised
by supernodes found in the DHT, or asserted by the operator), and an
operator's opt-out is final for the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nat.endpoint import StunService
from nat.reachability import Reachability
from p2pnode.connectivity.relays import (
    RELAY_BUCKETS,
    RelayCandidate,
    RelayFinder,
    SelectorConfig,
)
from p2pnode.connectivity.supernode import Supernode, SupernodeConfig, SupernodeStatus
from p2pnode.connectivity.verdicts import (
    Verdict,
    VerdictSource,
    fixed_verdict,
    learned_stun_verdicts,
    stun_verdicts,
)
from p2pnode.dht import Address, BootstrapResult, DhtConfig, DhtNode, TableHealth
from p2pnode.identity import Identity
from p2pnode.records import SignedRecord

__all__ = ["DHT_STATE_FILE", "P2PNode", "RoleOptions"]

DHT_STATE_FILE = "dht-contacts.json"


@dataclass(frozen=True)
class RoleOptions:
    """What a node serves besides the DHT, and how it judges its own reachability.

    ``public_ip`` set: the operator asserts the node is publicly reachable there
    (no measurement). Otherwise ``stun_servers`` are asked to dial back (at least
    three for a verdict others can trust); with neither, reachability stays
    unknown and the node stays a client, saying why.
    """

    supernode: SupernodeConfig | None = None  # None: no supernode controller at all
    stun_servers: tuple[Address, ...] = ()
    min_agree: int = 3
    public_ip: str | None = None
    serve_stun: Address | None = None  # run a STUN server (with dial-back) here
    stun_alt_ip: str | None = None  # ... and RFC 5780 discovery with this second IP
    find_relays: bool = False  # find supernodes in the DHT, health-check them, keep two

    def verdicts(self, learned: Callable[[], Sequence[Address]] | None = None) -> VerdictSource:
        """How reachability is judged: ``--public``, else dial-back checks against the
        given servers plus, with ``learned``, those supernodes advertise in the DHT."""
        if self.public_ip is not None:
            return fixed_verdict(
                Reachability.PUBLIC, self.public_ip, f"public at {self.public_ip} (--public)"
            )
        if learned is not None:
            return learned_stun_verdicts(self.stun_servers, learned, min_agree=self.min_agree)
        if self.stun_servers:
            return stun_verdicts(self.stun_servers, min_agree=self.min_agree)

        async def unknown() -> Verdict:
            return Verdict(
                Reachability.UNKNOWN, None, "no STUN servers to check against (--stun or --public)"
            )

        return unknown


class P2PNode:
    """A peer: identity from ``home``, a DHT node on ``listen``, and the roles in ``roles``."""

    def __init__(
        self,
        home: Path,
        *,
        listen: Address = ("0.0.0.0", 0),
        bootstrap: Sequence[Address] = (),
        client_mode: bool = False,
        config: DhtConfig | None = None,
        roles: RoleOptions | None = None,
        create: bool = False,
    ) -> None:
        self.home = home
        self.identity = Identity.load_or_create(home) if create else Identity.load(home)
        self.roles = roles or RoleOptions()
        cfg = config or DhtConfig()
        self.dht = DhtNode(
            self.identity,
            listen=listen,
            bootstrap=bootstrap,
            k=cfg.k,
            alpha=cfg.alpha,
            client_mode=client_mode,
            config=cfg,
            state_path=home / DHT_STATE_FILE,
        )
        self.stun: StunService | None = None
        self.supernode: Supernode | None = None
        self.relays: RelayFinder | None = None
        if self.roles.find_relays:
            # All sixteen rendezvous buckets per fetch: a young network has few
            # supernodes, and fetches happen only while fewer than two are usable.
            # A node that may become a supernode also wants enough supernodes with
            # dial-back STUN to judge its reachability against (min_agree of them).
            wanted = self.roles.min_agree if self.roles.supernode is not None else 0
            self.relays = RelayFinder(
                self._fetch,
                own_key=self.identity.public_key,
                buckets_per_fetch=RELAY_BUCKETS,
                config=SelectorConfig(min_dial_back=wanted),
            )

    @property
    def address(self) -> Address:
        return self.dht.address

    async def start(self) -> BootstrapResult | None:
        """Join the network, then start the STUN server and the supernode controller.

        Raises ``OSError`` (or ``ValueError`` for an impossible STUN address pair)
        when a socket cannot be bound; whatever was started is stopped again.
        """
        result = await self.dht.start()
        try:
            if self.roles.serve_stun is not None:
                self.stun = await StunService.start(
                    self.roles.serve_stun, alt_ip=self.roles.stun_alt_ip
                )
            if self.roles.supernode is not None:
                learned = self.relays.dial_back_servers if self.relays is not None else None
                self.supernode = Supernode(
                    self.identity,
                    self.dht,
                    self.roles.supernode,
                    verdicts=self.roles.verdicts(learned),
                    dial_back_server=self.stun.addresses[0] if self.stun is not None else None,
                )
        except BaseException:
            await self.stop()
            raise
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """The node's life until ``stop`` is set: the supernode role's checks and the
        relay search, each in this TaskGroup (an error in one stops the node, loudly)."""
        async with asyncio.TaskGroup() as tasks:
            if self.supernode is not None:
                tasks.create_task(self.supernode.run(stop))
            if self.relays is not None:
                tasks.create_task(self.relays.run(stop))
            tasks.create_task(stop.wait())

    def chosen_relays(self) -> tuple[RelayCandidate, ...]:
        """The (at most two) healthy supernodes this node would use now, best first."""
        return self.relays.chosen() if self.relays is not None else ()

    async def _fetch(self, key: bytes) -> tuple[SignedRecord, ...]:
        return tuple((await self.dht.get(key)).records)

    async def stop(self) -> None:
        if self.supernode is not None:
            await self.supernode.close()
            self.supernode = None
        if self.stun is not None:
            await self.stun.close()
            self.stun = None
        await self.dht.close()

    def health(self) -> TableHealth:
        return self.dht.health()

    def role(self) -> SupernodeStatus | None:
        """The role taken and why (None when this node runs no supernode controller)."""
        return self.supernode.status() if self.supernode is not None else None

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

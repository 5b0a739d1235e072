"""``P2PNode``: one peer as a whole. Today: its identity and its DHT node.

Later issues add NAT discovery, relays and the supernode role here; each part
is started in ``start`` and stopped in reverse order in ``stop``.

Invariants: the identity comes from the node's home (created only by
``p2pnode init`` or ``create=True``); the DHT routing table is saved in the
home as JSON (``dht-contacts.json``) and reloaded on the next start, so a
restarted node keeps both its identity (hence node id) and its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from p2pnode.dht import Address, BootstrapResult, DhtConfig, DhtNode, TableHealth
from p2pnode.identity import Identity

__all__ = ["DHT_STATE_FILE", "P2PNode"]

DHT_STATE_FILE = "dht-contacts.json"


class P2PNode:
    """A peer: identity from ``home`` plus a DHT node listening on ``listen``."""

    def __init__(
        self,
        home: Path,
        *,
        listen: Address = ("0.0.0.0", 0),
        bootstrap: Sequence[Address] = (),
        client_mode: bool = False,
        config: DhtConfig | None = None,
        create: bool = False,
    ) -> None:
        self.home = home
        self.identity = Identity.load_or_create(home) if create else Identity.load(home)
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

    @property
    def address(self) -> Address:
        return self.dht.address

    async def start(self) -> BootstrapResult | None:
        """Join the network; later roles (NAT, relay, supernode) start after the DHT."""
        return await self.dht.start()

    async def stop(self) -> None:
        await self.dht.close()

    def health(self) -> TableHealth:
        return self.dht.health()

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

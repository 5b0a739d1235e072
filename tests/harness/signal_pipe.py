"""In-memory signalling for PeerLink tests: a hub of per-peer queues, the sender stamped by the hub.

Why: PeerLink takes its signalling as an injected ``SignalTransport``; until the
sealed envelopes of ``connectivity.signalling`` are wired in, tests need a
transport whose sender is authentic by construction (the hub stamps it, a test
cannot forge it by accident) and that can delay each signal like a network hop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from p2pnode.connectivity.peerlink import SignalDelivery

__all__ = ["MemoryHub", "MemorySignalling"]

MAX_QUEUED = 64  # per recipient: a test that floods signalling fails loudly, not slowly


@dataclass
class MemoryHub:
    """Delivers ``send(peer, payload)`` to ``peer``'s queue after ``delay`` seconds."""

    delay: float = 0.0
    _queues: dict[str, asyncio.Queue[SignalDelivery]] = field(default_factory=dict)
    sent: int = 0

    def endpoint(self, peer_id: str) -> MemorySignalling:
        self._queues.setdefault(peer_id, asyncio.Queue(MAX_QUEUED))
        return MemorySignalling(self, peer_id)

    async def deliver(self, sender: str, peer: str, payload: bytes) -> None:
        queue = self._queues.get(peer)
        if queue is None:
            raise LookupError("unknown peer")
        self.sent += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        queue.put_nowait(SignalDelivery(sender, payload))

    def queue(self, peer_id: str) -> asyncio.Queue[SignalDelivery]:
        return self._queues[peer_id]


@dataclass
class MemorySignalling:
    """One peer's ``SignalTransport`` on a ``MemoryHub``."""

    hub: MemoryHub
    peer_id: str

    async def send(self, peer: str, payload: bytes) -> None:
        await self.hub.deliver(self.peer_id, peer, payload)

    async def receive(self) -> SignalDelivery:
        return await self.hub.queue(self.peer_id).get()

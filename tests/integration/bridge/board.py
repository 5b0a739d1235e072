"""In-memory call signalling for the bridge tests: one queue and one pump per peer.

The calls services' sealed signals go over homes in the runtime (the signalling
tests cover that path); here they are handed over in memory. A signal to a
peer that is not on the board is lost, as on the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from p2pnode.sessions.calls import CallService

__all__ = ["Board"]


class Board:
    def __init__(self, names: Iterable[str]) -> None:
        self.services: dict[str, CallService] = {}
        self.queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {
            name: asyncio.Queue() for name in names
        }

    def sender(self, me: str) -> Callable[[str, bytes], Awaitable[None]]:
        async def send(peer: str, payload: bytes) -> None:
            if peer in self.queues:
                self.queues[peer].put_nowait((me, payload))

        return send

    async def pump(self, me: str) -> None:
        while True:
            origin, payload = await self.queues[me].get()
            await self.services[me].handle_signal(origin, payload)

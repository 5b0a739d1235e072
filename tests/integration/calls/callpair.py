"""Two call services in one event loop on loopback, with in-memory signalling.

aioice skips 127.0.0.1 when it gathers host candidates; ``loopback_ice``
narrows that one function for the duration of a test so the peers can use
loopback (the lab tests use real namespaces instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import aioice.ice

from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from relay.auth import static_users
from relay.policy import PeerAddressPolicy, parse_networks
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService

ALICE = "alice-peer-id"
BOB = "bob-peer-id"


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


class Switchboard:
    """Delivers each signal to the addressed service from its own pump task (no re-entry)."""

    def __init__(self) -> None:
        self.services: dict[str, CallService] = {}
        self.queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}
        self.sent: list[tuple[str, str, bytes]] = []
        self.cut = False  # when set, signals vanish (an unreachable peer)

    def sender(self, me: str) -> Callable[[str, bytes], asyncio.Future[None]]:
        async def send(peer: str, payload: bytes) -> None:
            self.sent.append((me, peer, payload))
            if not self.cut and peer in self.queues:
                self.queues[peer].put_nowait((me, payload))

        return send  # type: ignore[return-value]

    async def pump(self, me: str) -> None:
        queue = self.queues.setdefault(me, asyncio.Queue())
        while True:
            sender, payload = await queue.get()
            if me in self.services:
                await self.services[me].handle_signal(sender, payload)


@dataclass
class Pair:
    alice: CallService
    bob: CallService
    board: Switchboard


@contextlib.asynccontextmanager
async def call_pair(
    alice_config: CallConfig,
    bob_config: CallConfig,
    *,
    bob_media: Callable[[], CallMedia] = CallMedia,
    bob_contacts: Callable[[str], bool] = lambda _peer: True,
) -> AsyncIterator[Pair]:
    board = Switchboard()
    board.queues[ALICE] = asyncio.Queue()
    board.queues[BOB] = asyncio.Queue()
    # The pumps outlive the services: a service's teardown may still hang up.
    async with asyncio.TaskGroup() as pumps:
        tasks = [pumps.create_task(board.pump(ALICE)), pumps.create_task(board.pump(BOB))]
        try:
            async with (
                CallService(ALICE, alice_config, board.sender(ALICE)) as alice,
                CallService(
                    BOB,
                    bob_config,
                    board.sender(BOB),
                    answer_media=bob_media,
                    is_contact=bob_contacts,
                ) as bob,
            ):
                board.services = {ALICE: alice, BOB: bob}
                yield Pair(alice, bob, board)
        finally:
            for task in tasks:
                task.cancel()


@contextlib.asynccontextmanager
async def turn_relay(users: dict[str, str]) -> AsyncIterator[tuple[RelayService, int]]:
    """Our own TURN server on 127.0.0.1, port 0, loopback peers allowed (tests only)."""
    loop = asyncio.get_running_loop()
    config = TurnConfig(
        realm="calls",
        credentials=static_users(users),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    service = RelayService(
        TurnServer(config, random.Random(), loop.time()), udp=[("127.0.0.1", 0)], tcp=[]
    )
    addresses = await service.start()
    try:
        yield service, addresses.udp[0][1]
    finally:
        service.close()

"""The demo's supernode step: a node judges its reachability, takes the relay role, and a
client sends a datagram through it.

Three STUN servers with dial-back (``nat.endpoint.StunService``) judge the node;
its ``Supernode`` controller, the one `p2pnode run` runs, is fed one round of
verdicts at a time until the hysteresis promotes it; it then serves STUN + TURN
and files its signed advert in the DHT. A client finds the advert
(``RelayFinder``), health-checks the relay over STUN, asks it for TURN
credentials over the DHT (``request_credentials``), allocates with aioice's
TURN client and sends a datagram through the allocation to an echo peer. On
loopback every dial-back reaches the node at the address the servers saw, so
"public" is the honest verdict here; nothing is forced.

Invariants: ``SupernodeDemo.running`` owns every socket it opens (STUN servers,
the echo peer, the relay role) and closes them on exit; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from aioice.turn import TurnTransport, create_turn_endpoint

from nat.endpoint import StunService
from p2pnode.connectivity.credentials import TurnCredentials, request_credentials
from p2pnode.connectivity.relays import RELAY_BUCKETS, RelayCandidate, RelayFinder
from p2pnode.connectivity.supernode import Supernode, SupernodeConfig, SupernodeStatus
from p2pnode.connectivity.verdicts import stun_verdicts
from p2pnode.dht import Address, DhtNode
from p2pnode.records import SignedRecord
from relay.messages import RelayStatistics

__all__ = [
    "LOOPBACK",
    "STUN_SERVERS",
    "EchoPeer",
    "FoundRelay",
    "RelayedDatagram",
    "RelayedInbox",
    "SupernodeDemo",
]

LOOPBACK = "127.0.0.1"
STUN_SERVERS = 3  # the reachability estimator wants three agreeing servers
ALLOCATION_LIFETIME = 600  # seconds; the demo deletes it long before
TURN_TIMEOUT = 5.0  # bound on allocating, and on deleting the allocation
ECHO_ATTEMPTS = 10  # UDP: a datagram may be lost, so send again (bounded)
ECHO_WAIT = 0.5  # seconds to wait for each echo
INBOX_SIZE = 64


class EchoPeer(asyncio.DatagramProtocol):
    """The far end of the relayed exchange: echoes every datagram, remembers the last sender."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.last_source: Address | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.received += 1
        self.last_source = (str(addr[0]), int(cast(int, addr[1])))
        if self.transport is not None:
            self.transport.sendto(data, addr)


class RelayedInbox(asyncio.DatagramProtocol):
    """What the client receives through its allocation; ``closed`` once aioice deleted it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(INBOX_SIZE)
        self.closed = asyncio.Event()
        self.last_error: str | None = None  # aioice reports a refused send here

    def error_received(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # bounded: extra datagrams are dropped
            self.queue.put_nowait(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


@dataclass(frozen=True)
class FoundRelay:
    """The supernode as the client found it: its signed advert and the health check's RTT."""

    candidate: RelayCandidate
    rtt: float | None  # seconds; None: the STUN health check got no answer
    adverts: int  # adverts the client learnt from the DHT


@dataclass(frozen=True)
class RelayedDatagram:
    """One datagram sent through a TURN allocation to the echo peer, and back."""

    credentials: TurnCredentials
    relayed: Address  # the allocation's relayed transport address
    echo_saw: Address | None  # where the echo peer saw the datagram come from
    echoed: bool
    attempts: int
    during: RelayStatistics  # the relay's counters while the allocation was live
    released: bool  # the allocation was deleted and the relay holds none
    error: str | None  # the TURN client's last send error (e.g. a refused permission)


class SupernodeDemo:
    """The step's parts: STUN servers, an echo peer, the supernode controller and a client."""

    def __init__(
        self,
        supernode: Supernode,
        client: DhtNode,
        stun: tuple[Address, ...],
        echo: EchoPeer,
        echo_address: Address,
    ) -> None:
        self.supernode = supernode
        self.client = client
        self.stun = stun
        self.echo = echo
        self.echo_address = echo_address

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, supernode_dht: DhtNode, client: DhtNode) -> AsyncIterator[SupernodeDemo]:
        """Start the STUN servers and the echo peer, set up the controller; close all on exit."""
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            servers: list[Address] = []
            for _ in range(STUN_SERVERS):
                service = await StunService.start((LOOPBACK, 0))  # dial-back on by default
                stack.push_async_callback(service.close)
                servers.append(service.addresses[0])
            transport, echo = await loop.create_datagram_endpoint(
                EchoPeer, local_addr=(LOOPBACK, 0)
            )
            stack.callback(transport.close)
            host, port = transport.get_extra_info("sockname")[:2]
            config = SupernodeConfig(host=LOOPBACK, port=0, allow_peers=("127.0.0.0/8",))
            supernode = Supernode(
                supernode_dht.identity,
                supernode_dht,
                config,
                verdicts=stun_verdicts(servers),
            )
            stack.push_async_callback(supernode.close)
            yield cls(supernode, client, tuple(servers), echo, (str(host), int(port)))

    def status(self) -> SupernodeStatus:
        return self.supernode.status()

    @property
    def max_rounds(self) -> int:
        """Rounds of checks to try: promotion needs ``promote_after`` in a row, two spare."""
        return self.supernode.config.hysteresis.promote_after + 2

    async def check_reachability(self) -> SupernodeStatus:
        """One round of dial-back checks fed to the controller (what `p2pnode run` does
        every check interval)."""
        return await self.supernode.check_reachability()

    @property
    def advert_stored(self) -> int:
        """Nodes that stored the supernode's latest advert (0 if none was published)."""
        put = self.supernode.last_put
        return put.stored if put is not None else 0

    async def find_relay(self) -> FoundRelay:
        """The client's search: every rendezvous bucket, then a STUN health check.

        ``LookupError`` if the supernode's advert is not among the chosen relays.
        """

        async def fetch(key: bytes) -> tuple[SignedRecord, ...]:
            return (await self.client.get(key)).records

        finder = RelayFinder(
            fetch, own_key=self.client.identity.public_key, buckets_per_fetch=RELAY_BUCKETS
        )
        owner = self.supernode.identity.public_key
        adverts = await finder.discover()
        chosen = await finder.refresh()
        found = next((c for c in chosen if c.owner == owner), None)
        if found is None:
            raise LookupError(
                f"the client learnt {adverts} adverts but chose none of the supernode"
            )
        return FoundRelay(found, finder.selector.rtt_of(owner), adverts)

    async def relay_datagram(self, relay: FoundRelay, payload: bytes) -> RelayedDatagram:
        """Credentials over the DHT, an allocation (aioice, UDP), one datagram there and back.

        Raises ``CredentialsError`` or aioice's ``TransactionError`` when the relay
        refuses, ``TimeoutError`` when it does not answer.
        """
        advert = relay.candidate.advert
        credentials = await request_credentials(self.client, advert.dht[0], relay.candidate.owner)
        async with asyncio.timeout(TURN_TIMEOUT):
            turn, inbox = await create_turn_endpoint(
                RelayedInbox,
                advert.udp[0],
                credentials.username,
                credentials.password,
                lifetime=ALLOCATION_LIFETIME,
            )
        try:
            host, port = turn.get_extra_info("sockname")
            attempts, echoed = await self._round_trip(turn, inbox, payload)
            during = self._relay_statistics()
        finally:
            turn.close()  # aioice deletes the allocation (Refresh, lifetime 0), then closes
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TURN_TIMEOUT):
                    await inbox.closed.wait()
        released = inbox.closed.is_set() and self._relay_statistics().allocations == 0
        return RelayedDatagram(
            credentials=credentials,
            relayed=(str(host), int(port)),
            echo_saw=self.echo.last_source,
            echoed=echoed,
            attempts=attempts,
            during=during,
            released=released,
            error=inbox.last_error,
        )

    async def _round_trip(
        self, turn: TurnTransport, inbox: RelayedInbox, payload: bytes
    ) -> tuple[int, bool]:
        """Send until the echo comes back (bounded); returns (datagrams sent, came back)."""
        for attempt in range(1, ECHO_ATTEMPTS + 1):
            turn.sendto(payload, self.echo_address)
            try:
                async with asyncio.timeout(ECHO_WAIT):
                    while await inbox.queue.get() != payload:
                        continue
                return attempt, True
            except TimeoutError:
                continue
        return ECHO_ATTEMPTS, False

    def _relay_statistics(self) -> RelayStatistics:
        relay = self.supernode.relay
        if relay is None:
            raise LookupError("the supernode runs no relay")
        return relay.statistics()

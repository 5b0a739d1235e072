"""A supernode's whole life on loopback, with real DHT nodes, a real relay and aioice's TURN client.

Promotion (verdict forced PUBLIC through the injected verdict source) -> advert in the
DHT -> a peer finds it, health-checks it over STUN, gets credentials over the DHT
RPC, allocates with aioice and exchanges data with an echo peer -> load at capacity:
new allocations refused with 508, the existing one keeps relaying -> load falls:
accepting again -> reachability lost: draining (508 to new, old ones go on,
credentials refused) -> last allocation gone: roles stopped, back to client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from aioice import stun as aioice_stun
from aioice.turn import TurnTransport, create_turn_endpoint

from nat.reachability import Reachability
from p2pnode.connectivity.credentials import (
    CredentialsError,
    TurnCredentials,
    request_credentials,
)
from p2pnode.connectivity.relay_advert import decode_relay_advert
from p2pnode.connectivity.relays import RELAY_BUCKETS, RelayFinder, relay_bucket, relay_key
from p2pnode.connectivity.supernode import Supernode, SupernodeConfig
from p2pnode.connectivity.verdicts import Verdict
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from p2pnode.records import SignedRecord
from relay.supernode import Hysteresis, Role

LOOP = "127.0.0.1"


class _Echo(asyncio.DatagramProtocol):
    """The remote peer: echoes every datagram back to its sender."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


def serving(supernode: Supernode) -> bool:
    """Whether the relay runs (a call: mypy keeps no narrowing of ``supernode.relay``)."""
    return supernode.relay is not None


@contextlib.asynccontextmanager
async def dht_nodes(identities: list[Identity]) -> AsyncIterator[list[DhtNode]]:
    seed = DhtNode(Identity.generate(), listen=(LOOP, 0))
    await seed.start()
    nodes = [seed]
    try:
        for identity in identities:
            node = DhtNode(identity, listen=(LOOP, 0), bootstrap=[seed.address])
            async with asyncio.timeout(10):
                await node.start()
            nodes.append(node)
        for _ in range(4):  # a few more storers so a put has somewhere to go
            extra = DhtNode(Identity.generate(), listen=(LOOP, 0), bootstrap=[seed.address])
            async with asyncio.timeout(10):
                await extra.start()
            nodes.append(extra)
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def allocate(
    relay: tuple[str, int], credentials: TurnCredentials, transport: str = "udp"
) -> tuple[TurnTransport, _Inbox]:
    async with asyncio.timeout(10):
        return await create_turn_endpoint(
            _Inbox,
            relay,
            credentials.username,
            credentials.password,
            lifetime=600,
            transport=transport,
        )


async def round_trip(
    turn: TurnTransport, inbox: _Inbox, peer: tuple[str, int], text: bytes
) -> None:
    """Send through the relay to the echo peer and get it back (bounded retries: UDP)."""
    for _ in range(20):
        turn.sendto(text, peer)
        try:
            async with asyncio.timeout(0.5):
                while True:
                    if await inbox.queue.get() == text:
                        return
        except TimeoutError:
            continue
    raise AssertionError(f"{text!r} never came back through the relay")


async def refused_code(relay: tuple[str, int], credentials: TurnCredentials) -> int:
    with pytest.raises(aioice_stun.TransactionFailed) as failure:
        await allocate(relay, credentials)
    code: int = failure.value.response.attributes["ERROR-CODE"][0]
    return code


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _scenario() -> None:
    loop = asyncio.get_running_loop()
    super_identity, peer_identity = Identity.generate(), Identity.generate()
    echo_transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(LOOP, 0))
    echo = echo_transport.get_extra_info("sockname")[:2]
    verdict = [Verdict(Reachability.PUBLIC, LOOP, "forced by the test")]

    async def verdicts() -> Verdict:
        return verdict[0]

    config = SupernodeConfig(
        host=LOOP,
        port=0,
        capacity=2,
        allow_peers=("127.0.0.0/8",),
        hysteresis=Hysteresis(promote_after=2, demote_after=2, load_high=1.0, load_low=0.8),
        drain_limit=600.0,
    )
    turns: list[TurnTransport] = []
    try:
        async with dht_nodes([super_identity, peer_identity]) as nodes:
            super_dht, peer_dht = nodes[1], nodes[2]
            supernode = Supernode(super_identity, super_dht, config, verdicts=verdicts)
            try:
                # -- promotion: two public verdicts in a row (hysteresis) ------------
                status = await supernode.check_reachability()
                assert status.role is Role.CANDIDATE
                assert not serving(supernode)
                status = await supernode.check_reachability()
                assert status.role is Role.SUPERNODE, status.describe()
                assert status.accepting and status.udp and status.tcp
                assert "public" in status.reason
                assert supernode.last_put is not None and supernode.last_put.stored >= 1

                # -- discovery through the DHT and a real STUN health check -----------
                async def fetch(key: bytes) -> tuple[SignedRecord, ...]:
                    return (await peer_dht.get(key)).records

                finder = RelayFinder(fetch, own_key=peer_identity.public_key)
                assert await finder.discover(range(RELAY_BUCKETS)) == 1
                chosen = await finder.refresh()
                assert [c.owner for c in chosen] == [super_identity.public_key]
                relay_rtt = finder.selector.rtt_of(super_identity.public_key)
                assert relay_rtt is not None
                advert = chosen[0].advert
                assert advert.capacity == 2 and advert.load == 0 and advert.has_room
                relay_address = advert.udp[0]
                assert relay_address == status.udp[0]

                # -- credentials over the DHT RPC, then a real allocation ---------------
                credentials = await request_credentials(peer_dht, advert.dht[0], chosen[0].owner)
                assert credentials.peer_id == peer_identity.peer_id
                first, first_inbox = await allocate(relay_address, credentials)
                turns.append(first)
                await round_trip(first, first_inbox, echo, b"hello through the supernode")
                # The second over TCP (peers whose UDP is blocked reach the relay so).
                second, second_inbox = await allocate(advert.tcp[0], credentials, "tcp")
                turns.append(second)
                assert supernode.relay is not None
                assert supernode.relay.statistics().allocations == 2

                # -- at capacity: new allocations refused, existing ones keep working ---
                assert await refused_code(relay_address, credentials) == 508  # the quota
                status = await supernode.tick()
                assert status.role is Role.SHEDDING and not status.accepting
                assert "2 of 2 allocations" in status.reason
                assert await refused_code(relay_address, credentials) == 508  # the gate
                await round_trip(first, first_inbox, echo, b"still relaying while shedding")
                await round_trip(second, second_inbox, echo, b"this one too")
                # The advert now says "no room": a peer looking again would not pick it.
                records = await fetch(relay_key(relay_bucket(super_identity.node_id)))
                newest = max(records, key=lambda r: r.seq)
                assert not decode_relay_advert(newest.payload).has_room

                # -- load falls below the low-water mark: accepting again ----------------
                second.close()
                await wait_until(
                    lambda: (
                        supernode.relay is not None
                        and supernode.relay.statistics().allocations == 1
                    ),
                    "the second allocation's deletion",
                )
                status = await supernode.tick()
                assert status.role is Role.SUPERNODE and status.accepting
                third, third_inbox = await allocate(relay_address, credentials)
                turns.append(third)
                await round_trip(third, third_inbox, echo, b"accepted again")

                # -- reachability lost: draining, never a crash-stop ---------------------
                verdict[0] = Verdict(Reachability.BEHIND_NAT, LOOP, "forced by the test")
                assert (await supernode.check_reachability()).role is Role.SUPERNODE
                status = await supernode.check_reachability()
                assert status.role is Role.DRAINING and not status.accepting
                assert await refused_code(relay_address, credentials) == 508
                await round_trip(first, first_inbox, echo, b"draining, still carried")
                with pytest.raises(CredentialsError, match="draining"):
                    await request_credentials(peer_dht, advert.dht[0], chosen[0].owner)
                assert (await supernode.tick()).role is Role.DRAINING  # calls remain
                for turn in (first, third):
                    turn.close()
                await wait_until(
                    lambda: (
                        supernode.relay is not None
                        and supernode.relay.statistics().allocations == 0
                    ),
                    "the last allocations' deletion",
                )
                status = await supernode.tick()
                assert status.role is Role.CLIENT
                assert not serving(supernode)
                assert "no allocations left" in status.reason
            finally:
                for turn in turns:
                    turn.close()
                await asyncio.sleep(0.1)  # let aioice's close tasks send their deletes
                await supernode.close()
    finally:
        echo_transport.close()


def test_supernode_lifecycle_on_loopback() -> None:
    asyncio.run(_scenario())

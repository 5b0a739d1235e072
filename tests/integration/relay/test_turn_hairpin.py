"""Both ends of a call on one relay: the service hands datagrams between its own relayed
sockets without the kernel round trip (``RelayService._hairpin``), and obeys the
receiving allocation's state exactly as if the datagram had come through the kernel.

Real sockets on loopback (port 0); a minimal TURN client written with ``nat.stun``
so the test sends exactly the ChannelData / Send indications it means to.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import struct
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

from nat.stun import (
    Attribute,
    ChannelNumber,
    Data,
    ErrorCode,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    StunClass,
    StunMessage,
    StunMethod,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    decode_message,
    encode_message,
)
from nat.stun.message import long_term_key
from relay.auth import static_users
from relay.policy import PeerAddressPolicy, parse_networks
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService

Address = tuple[str, int]
P = ParamSpec("P")
WAIT = 5.0  # seconds before a loopback answer is called lost
QUIET = 0.3  # seconds a socket must stay silent to count as "nothing arrived"
REALM, USER, PASSWORD = "test", "user", "pass"
KEY = long_term_key(USER, REALM, PASSWORD)
ALICE_CHANNEL, BOB_CHANNEL = 0x4001, 0x4002


def run_async(function: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(function(*args, **kwargs))

    return wrapper


class Client(asyncio.DatagramProtocol):
    """One TURN client socket: requests with long-term credentials, raw datagrams."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.server: Address = ("127.0.0.1", 0)
        self.nonce: str | None = None
        self.relayed: Address = ("0.0.0.0", 0)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queue.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.server)

    async def receive(self) -> bytes:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    async def nothing_arrives(self) -> bool:
        try:
            await asyncio.wait_for(self.queue.get(), QUIET)
        except TimeoutError:
            return True
        return False

    async def request(self, method: StunMethod, attributes: list[Attribute]) -> StunMessage:
        for _ in range(3):
            tid = os.urandom(12)
            extra: list[Attribute] = []
            if self.nonce is not None:
                extra = [Username(USER), Realm(REALM), Nonce(self.nonce)]
            message = StunMessage(method, StunClass.REQUEST, tid, (*attributes, *extra))
            self.send(encode_message(message, integrity_key=KEY if self.nonce else None))
            while True:
                answer = decode_message(await self.receive())
                if answer.transaction_id == tid:
                    break
            error = answer.get(ErrorCode)
            nonce = answer.get(Nonce)
            if error is not None and error.code in (401, 438) and nonce is not None:
                self.nonce = nonce.value
                continue
            assert error is None, error
            return answer
        raise AssertionError("no authenticated answer")

    async def allocate(self) -> None:
        answer = await self.request(StunMethod.ALLOCATE, [RequestedTransport(17)])
        relayed = answer.get(XorRelayedAddress)
        assert relayed is not None
        self.relayed = relayed.address

    async def bind(self, number: int, peer: Address) -> None:
        await self.request(StunMethod.CHANNEL_BIND, [ChannelNumber(number), XorPeerAddress(peer)])

    async def permit(self, peer: Address) -> None:
        await self.request(StunMethod.CREATE_PERMISSION, [XorPeerAddress(peer)])

    async def release(self) -> None:
        await self.request(StunMethod.REFRESH, [Lifetime(0)])


async def relay_and_clients(count: int) -> tuple[RelayService, list[Client]]:
    loop = asyncio.get_running_loop()
    config = TurnConfig(
        realm=REALM,
        credentials=static_users({USER: PASSWORD}),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    service = RelayService(
        TurnServer(config, random.Random(5), loop.time()), udp=[("127.0.0.1", 0)], tcp=[]
    )
    listener = (await service.start()).udp[0]
    clients = []
    for _ in range(count):
        transport, client = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
        client.transport = transport
        client.server = listener
        await client.allocate()
        clients.append(client)
    return service, clients


def channel_data(number: int, payload: bytes) -> bytes:
    return struct.pack("!HH", number, len(payload)) + payload


def close(service: RelayService, clients: list[Client]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    service.close()


@run_async
async def test_a_call_between_two_allocations_is_relayed_without_the_kernel_hop() -> None:
    service, (alice, bob) = await relay_and_clients(2)
    try:
        await alice.bind(ALICE_CHANNEL, bob.relayed)
        await bob.bind(BOB_CHANNEL, alice.relayed)
        for index in range(10):
            alice.send(channel_data(ALICE_CHANNEL, b"to bob %d" % index))
            bob.send(channel_data(BOB_CHANNEL, b"to alice %d" % index))
        # Each arrives on the receiver's own channel, payload intact, in order.
        to_bob = [await bob.receive() for _ in range(10)]
        to_alice = [await alice.receive() for _ in range(10)]
        assert to_bob == [channel_data(BOB_CHANNEL, b"to bob %d" % i) for i in range(10)]
        assert to_alice == [channel_data(ALICE_CHANNEL, b"to alice %d" % i) for i in range(10)]
        assert service.hairpinned == 20  # none went through the kernel between relays
        stats = service.statistics()
        # Counted as the kernel path would: each datagram left one allocation to a
        # peer and reached the other's client.
        assert (stats.packets_to_peer, stats.packets_to_client) == (20, 20)
    finally:
        close(service, [alice, bob])


@run_async
async def test_a_deleted_allocation_stops_receiving_at_once() -> None:
    service, (alice, bob) = await relay_and_clients(2)
    try:
        await alice.bind(ALICE_CHANNEL, bob.relayed)
        await bob.bind(BOB_CHANNEL, alice.relayed)
        alice.send(channel_data(ALICE_CHANNEL, b"before"))
        assert await bob.receive() == channel_data(BOB_CHANNEL, b"before")
        await bob.release()  # Refresh with LIFETIME 0: bob's allocation is gone
        alice.send(channel_data(ALICE_CHANNEL, b"after"))
        assert await bob.nothing_arrives()
        assert service.hairpinned == 1  # bob's relayed socket is no longer ours
        assert service.statistics().packets_to_client == 1
    finally:
        close(service, [alice, bob])


@run_async
async def test_the_receiving_allocation_needs_its_own_permission() -> None:
    service, (alice, bob) = await relay_and_clients(2)
    try:
        # Alice may send to bob's relayed address; bob has not permitted alice's.
        await alice.bind(ALICE_CHANNEL, bob.relayed)
        alice.send(channel_data(ALICE_CHANNEL, b"unwanted"))
        assert await bob.nothing_arrives()
        stats = service.statistics()
        assert stats.dropped("no permission") == 1
        assert stats.packets_to_client == 0
        # A permission without a channel: the next datagram reaches bob as a Data
        # indication (RFC 8656 §11.3), from alice's relayed address.
        await bob.permit(alice.relayed)
        alice.send(channel_data(ALICE_CHANNEL, b"wanted"))
        indication = decode_message(await bob.receive())
        assert (indication.method, indication.cls) == (StunMethod.DATA, StunClass.INDICATION)
        peer, data = indication.get(XorPeerAddress), indication.get(Data)
        assert peer is not None and data is not None
        assert (peer.address, data.value) == (alice.relayed, b"wanted")
        assert service.hairpinned == 2
    finally:
        close(service, [alice, bob])


@run_async
async def test_a_send_indication_to_our_own_relayed_address_takes_the_hairpin_too() -> None:
    service, (alice, bob) = await relay_and_clients(2)
    try:
        await alice.permit(bob.relayed)  # alice sends by Send indication, no channel
        await bob.bind(BOB_CHANNEL, alice.relayed)
        indication = StunMessage(
            StunMethod.SEND,
            StunClass.INDICATION,
            os.urandom(12),
            (XorPeerAddress(bob.relayed), Data(b"by indication")),
        )
        alice.send(encode_message(indication))
        assert await bob.receive() == channel_data(BOB_CHANNEL, b"by indication")
        assert service.hairpinned == 1
        stats = service.statistics()
        assert (stats.packets_to_peer, stats.packets_to_client) == (1, 1)
    finally:
        close(service, [alice, bob])

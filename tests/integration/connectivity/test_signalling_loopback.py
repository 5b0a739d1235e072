"""Sealed signalling on loopback with real DHT nodes and real sockets.

Three supernodes (public: each its own home, CONTACT in the DHT) and peers
behind "NAT" (attached to two of them, found through the supernodes' CONTACT
records). Short keepalives make loss detection quick; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from p2pnode.connectivity.attach import HomeConfig
from p2pnode.connectivity.contact import Capability, HomeEntry, NatVerdict, PresenceStatus
from p2pnode.connectivity.envelope import ENVELOPE_ID_BYTES, seal_envelope
from p2pnode.connectivity.homes import PeerConfig
from p2pnode.connectivity.homewire import Code, Send, SendResult, decode_message, encode_message
from p2pnode.connectivity.signalling import (
    HomeDown,
    HomeUp,
    PeerUnreachableError,
    PresenceChanged,
    SignallingService,
    address_text,
    contact_homes,
    fetch_contact,
    fetch_presence,
)
from p2pnode.dht import DhtConfig, DhtNode
from p2pnode.identity import Identity

LOOPBACK = DhtConfig().sharing_ip(16)
PEER = PeerConfig(keepalive=1.0, keepalive_timeout=2.5, retransmit=0.25, failure_backoff=30.0)
HOME = HomeConfig(grace=2.0, min_keepalive=0.5)
WAIT = 15.0  # a bound on any wait, never a speed assertion


@dataclass
class Lab:
    supernodes: list[SignallingService]
    dhts: list[DhtNode] = field(default_factory=list)
    peers: dict[str, SignallingService] = field(default_factory=dict)
    events: dict[str, list[object]] = field(default_factory=dict)

    async def peer(self, name: str, identity: Identity | None = None) -> SignallingService:
        identity = identity or Identity.generate()
        dht = DhtNode(identity, bootstrap=[self.dhts[0].address], config=LOOPBACK, client_mode=True)
        await dht.start()
        self.dhts.append(dht)
        keys = [s.identity.public_key for s in self.supernodes]

        async def find_homes() -> list[HomeEntry]:
            return await contact_homes(dht, keys)

        events = self.events.setdefault(name, [])
        service = SignallingService(
            identity, dht, find_homes=find_homes, peer_config=PEER, emit=events.append
        )
        await service.start()
        self.peers[name] = service
        await until(lambda: len(service.homes()) == 2)
        await until_published(dht, identity.public_key, service.homes())
        return service


async def until(condition: Callable[[], bool], limit: float = WAIT) -> None:
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - polls state that several callbacks change
            await asyncio.sleep(0.02)


async def until_published(dht: DhtNode, key: bytes, homes: tuple[HomeEntry, ...]) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            contact = await fetch_contact(dht, key)
            if contact is not None and set(contact.homes) == set(homes):
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def lab() -> AsyncIterator[Lab]:
    dhts: list[DhtNode] = []
    supernodes: list[SignallingService] = []
    try:
        for index in range(3):
            bootstrap = [dhts[0].address] if dhts else []
            dht = DhtNode(Identity.generate(), bootstrap=bootstrap, config=LOOPBACK)
            await dht.start()
            dhts.append(dht)
            service = SignallingService(dht.identity, dht, public=True, home_config=HOME)
            await service.start()
            supernodes.append(service)
            del index
        for service in supernodes:
            await until_published(dhts[-1], service.identity.public_key, (service.own_home,))
        world = Lab(supernodes, dhts)
        yield world
    finally:
        for service in [*supernodes, *world.peers.values()] if "world" in locals() else supernodes:
            await service.stop()
        for dht in dhts if "world" not in locals() else world.dhts:
            await dht.close()


def run(test: Callable[[Lab], Awaitable[None]]) -> None:
    async def main() -> None:
        async with lab() as world:
            await test(world)
        # Every event the services emitted is plain data the runtime can send as JSON.
        for events in world.events.values():
            for event in events:
                json.dumps(dataclasses.asdict(event))  # type: ignore[call-overload]

    asyncio.run(main())


# -- tests ----------------------------------------------------------------------------------


def test_two_attached_peers_exchange_sealed_signals() -> None:
    async def scenario(world: Lab) -> None:
        alice, bob = await world.peer("alice"), await world.peer("bob")
        offer = b"v=0 " + os.urandom(4000)  # an SDP offer's size, fragmented on the way
        report = await alice.send_signal(bob.identity.peer_id, offer)
        assert report.via in {home.signal for home in bob.homes()}
        async with asyncio.timeout(WAIT):
            delivery = await bob.receive()
        assert (delivery.sender, delivery.payload) == (alice.identity.peer_id, offer)
        await bob.send(alice.identity.peer_id, b"answer")  # the SignalTransport face
        async with asyncio.timeout(WAIT):
            back = await alice.receive()
        assert (back.sender, back.payload) == (bob.identity.peer_id, b"answer")
        # Channels: each service reads only its own signals; nobody's channel is refused.
        bob_links = bob.channel("link")
        await alice.channel("link").send(bob.identity.peer_id, b"link offer")
        await alice.send_signal(bob.identity.peer_id, b"chat message", channel="chat")
        await alice.send_signal(bob.identity.peer_id, b"default again")
        async with asyncio.timeout(WAIT):
            on_link = await bob_links.receive()
            on_default = await bob.receive()
        assert (on_link.sender, on_link.payload) == (alice.identity.peer_id, b"link offer")
        assert on_default.payload == b"default again"
        refused = dict(bob.statistics().refused)
        assert refused == {"envelope for a channel nobody opened": 1}
        # Nobody is attached for a stranger's key: unreachable, with what each home said.
        stranger = Identity.generate()
        with pytest.raises(PeerUnreachableError, match="no CONTACT"):
            await alice.send_signal(stranger.public_key, b"x")
        contact = await fetch_contact(alice.dht, bob.identity.public_key)
        assert contact is not None and contact.nat is NatVerdict.UNKNOWN
        assert contact.capabilities is Capability.CHAT
        supernode = await fetch_contact(alice.dht, world.supernodes[0].identity.public_key)
        assert supernode is not None and supernode.nat is NatVerdict.PUBLIC
        assert supernode.homes == (world.supernodes[0].own_home,)
        # A public node is reachable directly (its own home).
        await alice.send_signal(world.supernodes[0].identity.public_key, b"to a supernode")
        async with asyncio.timeout(WAIT):
            got = await world.supernodes[0].receive()
        assert got.sender == alice.identity.peer_id

    run(scenario)


class RawSender:
    """Anyone on the network (a supernode, an eavesdropper): raw SEND datagrams to a home."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(WAIT)

    def send(self, envelope: bytes, home: tuple[str, int]) -> Code:
        txid = os.urandom(8)
        self.sock.sendto(encode_message(Send(txid, envelope)), home)
        while True:
            data, _ = self.sock.recvfrom(65536)
            message = decode_message(data)
            if isinstance(message, SendResult) and message.txid == txid:
                return message.code


def test_tampered_and_replayed_envelopes_are_refused() -> None:
    async def scenario(world: Lab) -> None:
        alice, bob = await world.peer("alice"), await world.peer("bob")
        home = bob.homes()[0].signal
        envelope = seal_envelope(
            alice.identity,
            bob.identity.public_key,
            b"genuine",
            envelope_id=os.urandom(ENVELOPE_ID_BYTES),
            now=time.time(),
        )
        raw = RawSender()
        try:
            first = await asyncio.to_thread(raw.send, envelope, home)
            assert first is Code.OK
            async with asyncio.timeout(WAIT):
                delivery = await bob.receive()
            assert (delivery.sender, delivery.payload) == (alice.identity.peer_id, b"genuine")
            # A replay is forwarded by the home (it cannot tell) and refused by bob.
            assert await asyncio.to_thread(raw.send, envelope, home) is Code.OK
            # A byte altered anywhere past the visible recipient key: refused too.
            altered = bytearray(envelope)
            altered[len(altered) // 2] ^= 0x40
            assert await asyncio.to_thread(raw.send, bytes(altered), home) is Code.OK
        finally:
            raw.sock.close()
        refused = dict(bob.statistics().refused)
        assert refused.get("envelope replayed") == 1
        assert refused.get("envelope") == 1
        assert bob.statistics().received == 1
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await bob.receive()

    run(scenario)


def test_a_killed_home_leaves_peers_reachable_and_is_replaced() -> None:
    async def scenario(world: Lab) -> None:
        alice, bob = await world.peer("alice"), await world.peer("bob")
        victim_key = bob.homes()[0].key
        victim = next(s for s in world.supernodes if s.identity.public_key == victim_key)
        dead = victim.own_home.signal
        victim.abort()  # closed abruptly: no goodbye to anyone
        report = await alice.send_signal(bob.identity.peer_id, b"still there?")
        assert report.via != dead
        assert report.attempts[-1] == (report.via, "ok")
        # The dead home is now tried last: the next signal goes through at once.
        report = await alice.send_signal(bob.identity.peer_id, b"at once")
        assert report.attempts == ((report.via, "ok"),)
        async with asyncio.timeout(WAIT):
            assert (await bob.receive()).payload == b"still there?"
        async with asyncio.timeout(WAIT):
            assert (await bob.receive()).payload == b"at once"
        # Bob notices (HomeDown), takes the third supernode as his second home, republishes
        # (the bound: a new second home within 30 s).
        await until(
            lambda: victim_key not in {h.key for h in bob.homes()} and len(bob.homes()) == 2, 30
        )
        await until_published(world.dhts[0], bob.identity.public_key, bob.homes())
        downs = [e for e in world.events["bob"] if isinstance(e, HomeDown)]
        assert [d.signal for d in downs] == [address_text(dead)]
        assert [e.home for e in world.events["bob"] if isinstance(e, HomeUp)][-1] != downs[0].home
        fresh = await fetch_contact(alice.dht, bob.identity.public_key)
        assert fresh is not None and victim_key not in {h.key for h in fresh.homes}
        # Anyone resolving bob now finds the new pair; signals keep arriving.
        await alice.send_signal(bob.identity.peer_id, b"again")
        async with asyncio.timeout(WAIT):
            assert (await bob.receive()).payload == b"again"

    run(scenario)


def test_a_watcher_sees_status_changes_a_crash_and_the_return() -> None:
    async def scenario(world: Lab) -> None:
        carol = await world.peer("carol")
        bob_identity = Identity.generate()
        bob = await world.peer("bob", bob_identity)
        seen = world.events["carol"]

        def latest() -> PresenceChanged | None:
            changes = [e for e in seen if isinstance(e, PresenceChanged)]
            return changes[-1] if changes else None

        assert await carol.watch(bob.identity.peer_id)
        await until(lambda: latest() is not None and latest().online)  # type: ignore[union-attr]
        bob.set_presence(PresenceStatus.AWAY, "lunch")
        await until(
            lambda: latest() == PresenceChanged(bob.identity.peer_id, True, "away", "lunch")
        )
        # The last status is also a PRESENCE record, for those who do not watch.
        async with asyncio.timeout(WAIT):
            while (record := await fetch_presence(carol.dht, bob_identity.public_key)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert (record.status, record.note) == (PresenceStatus.AWAY, "lunch")
        bob.abort()  # crashed: his homes notice after keepalive + grace
        await until(lambda: latest() is not None and not latest().online)  # type: ignore[union-attr]
        del world.peers["bob"]
        await world.peer("bob", bob_identity)  # back (new socket, same key)
        await until(lambda: latest() is not None and latest().online, 25)  # type: ignore[union-attr]

    run(scenario)


def test_allow_list_keeps_strangers_from_watching() -> None:
    async def scenario(world: Lab) -> None:
        carol, bob = await world.peer("carol"), await world.peer("bob")
        dave = await world.peer("dave")
        bob.allow_watchers([carol.identity.public_key])
        await asyncio.sleep(0.3)
        assert await carol.watch(bob.identity.peer_id)
        assert await dave.watch(bob.identity.peer_id)
        await until(
            lambda: (
                (
                    carol.presence_of(bob.identity.peer_id) or PresenceChanged("", False, "", "")
                ).online
            )
        )
        await asyncio.sleep(0.5)
        report = dave.presence_of(bob.identity.peer_id)
        assert report is None or not report.online
        refused = [s.statistics().home for s in world.supernodes]
        assert any(dict(h.refused).get("FORBIDDEN") for h in refused if h is not None)

    run(scenario)


def test_a_node_bound_to_every_interface_advertises_its_public_address() -> None:
    async def scenario() -> None:
        identity = Identity.generate()
        dht = DhtNode(identity, listen=("0.0.0.0", 0), config=LOOPBACK)
        await dht.start()
        service = SignallingService(
            identity, dht, listen=("0.0.0.0", 0), advertise=("127.0.0.1", 0), public=True
        )
        await service.start()
        try:
            home = service.own_home
            assert home.signal == ("127.0.0.1", service.address[1])
            assert home.dht == ("127.0.0.1", dht.address[1])
            await until_published(dht, identity.public_key, (home,))  # what others read
        finally:
            await service.stop()
            await dht.close()

    asyncio.run(scenario())


def test_a_peer_with_no_candidates_searches_at_a_bounded_pace() -> None:
    """Every candidate gone or backed off makes the core ask again at once; the service
    still searches at most once per gap, never in a hot loop."""

    async def scenario() -> None:
        identity = Identity.generate()
        dht = DhtNode(identity, config=LOOPBACK)
        await dht.start()
        searches = 0

        async def find_nothing() -> list[HomeEntry]:
            nonlocal searches
            searches += 1
            return []

        service = SignallingService(identity, dht, find_homes=find_nothing, peer_config=PEER)
        await service.start()
        try:
            await asyncio.sleep(1.0)
        finally:
            await service.stop()
            await dht.close()
        assert 1 <= searches <= 2, searches

    asyncio.run(scenario())

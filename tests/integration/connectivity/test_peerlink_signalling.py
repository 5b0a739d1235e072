"""PeerLink over the real sealed signalling (part A) on loopback: identities end to end.

Two public supernodes (DHT + signalling homes), two peers attached to both,
our TURN relay on loopback (aioice skips 127.0.0.1 host candidates, so the path
is relayed). The offer and answer travel as sealed envelopes through the
recipient's homes; the answering side learns the dialer's peer id from the
envelope, not from anything the dialer wrote in the payload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from p2pnode.connectivity.attach import HomeConfig
from p2pnode.connectivity.contact import HomeEntry
from p2pnode.connectivity.homes import PeerConfig
from p2pnode.connectivity.ice_servers import TurnTransport
from p2pnode.connectivity.peerlink import CandidateKind, PeerLink
from p2pnode.connectivity.signalling import SignallingService, contact_homes, fetch_contact
from p2pnode.dht import DhtConfig, DhtNode
from p2pnode.identity import Identity
from tests.integration.connectivity.test_peerlink_loopback import relay_config, start_relay

LOOPBACK = DhtConfig().sharing_ip(16)
PEER = PeerConfig(keepalive=1.0, keepalive_timeout=1.5, retransmit=0.25, failure_backoff=30.0)
HOME = HomeConfig(grace=1.0, min_keepalive=0.5)
WAIT = 15.0  # a bound on every wait, never a speed assertion


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - state changed by several callbacks
            await asyncio.sleep(0.02)


async def published(dht: DhtNode, key: bytes, homes: tuple[HomeEntry, ...]) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            contact = await fetch_contact(dht, key)
            if contact is not None and set(contact.homes) == set(homes):
                return
            await asyncio.sleep(0.05)


async def scenario() -> None:
    dhts: list[DhtNode] = []
    services: list[SignallingService] = []
    relay_service, relay = await start_relay()
    try:
        for _ in range(2):
            bootstrap = [dhts[0].address] if dhts else []
            dht = DhtNode(Identity.generate(), bootstrap=bootstrap, config=LOOPBACK)
            await dht.start()
            dhts.append(dht)
            home = SignallingService(dht.identity, dht, public=True, home_config=HOME)
            await home.start()
            services.append(home)
        for home in services:
            await published(dhts[-1], home.identity.public_key, (home.own_home,))
        keys = [home.identity.public_key for home in services]
        peers = []
        for _ in range(2):
            identity = Identity.generate()
            dht = DhtNode(identity, bootstrap=[dhts[0].address], config=LOOPBACK, client_mode=True)
            await dht.start()
            dhts.append(dht)

            async def find_homes(dht: DhtNode = dht) -> list[HomeEntry]:
                return await contact_homes(dht, keys)

            peer = SignallingService(identity, dht, find_homes=find_homes, peer_config=PEER)
            await peer.start()
            services.append(peer)
            await until(lambda peer=peer: len(peer.homes()) == 2)  # type: ignore[misc]
            await published(dht, identity.public_key, peer.homes())
            peers.append(peer)
        alice, bob = peers
        alice_id, bob_id = alice.identity.peer_id, bob.identity.peer_id

        async def answer() -> PeerLink:
            async with asyncio.timeout(WAIT):
                delivery = await bob.receive()
            return await PeerLink.answer(
                delivery, bob, relay_config(relay, bob_id, TurnTransport.UDP)
            )

        async with asyncio.TaskGroup() as group:
            answering = group.create_task(answer())
            link_a = await PeerLink.dial(
                bob_id, alice, relay_config(relay, alice_id, TurnTransport.UDP)
            )
        link_b = answering.result()
        try:
            assert link_a.peer == bob_id
            assert link_b.peer == alice_id  # from the sealed envelope's authenticated sender
            assert link_a.path().local_kind is CandidateKind.RELAY
            link_b.verify_remote_fingerprint()
            link_a.send(b"over sealed signalling")
            async with asyncio.timeout(WAIT):
                assert await link_b.receive() == b"over sealed signalling"
        finally:
            await link_a.close()
            await link_b.close()
    finally:
        for service in reversed(services):
            await service.stop()
        for dht in dhts:
            await dht.close()
        relay_service.close()


def test_peerlink_over_sealed_signalling() -> None:
    asyncio.run(scenario())

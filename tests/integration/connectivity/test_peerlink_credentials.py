"""A link's ICE servers come from our own supernode: its credentials RPC, its TURN relay.

Loopback, real sockets: a supernode (DHT node serving the credentials RPC, and
our TURN relay keyed by the same secret), two peers that ask it for
credentials with their identities (``ice_plan_for``), then a relayed PeerLink
through it. aioice skips 127.0.0.1 host candidates, so the path is relayed.
"""

from __future__ import annotations

import asyncio
import random
import time

from p2pnode.connectivity.credentials import CredentialIssuer
from p2pnode.connectivity.ice_servers import TurnTransport, ice_plan_for
from p2pnode.connectivity.peerlink import CandidateKind, LinkConfig, PeerLink
from p2pnode.connectivity.relay_advert import RelayAdvert
from p2pnode.connectivity.relays import RelayCandidate
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from relay.auth import rest_api_credentials
from relay.policy import PeerAddressPolicy, parse_networks
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService
from tests.harness.signal_pipe import MemoryHub

SECRET = b"peerlink-credentials-secret"
REALM = "p2pnode"
WAIT = 15.0  # a bound on every wait, never a speed assertion


async def scenario() -> None:
    loop = asyncio.get_running_loop()
    supernode = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
    CredentialIssuer(SECRET, REALM, own_key=supernode.identity.public_key).register(supernode)
    await supernode.start()
    turn = TurnConfig(
        realm=REALM,
        credentials=rest_api_credentials(SECRET),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    service = RelayService(
        TurnServer(turn, random.Random(), loop.time()),
        udp=[("127.0.0.1", 0)],
        tcp=[("127.0.0.1", 0)],
    )
    addresses = await service.start()
    advert = RelayAdvert(
        udp=(addresses.udp[0],),
        tcp=(addresses.tcp[0],),
        dht=(supernode.address,),
        realm=REALM,
        capacity=10,
        load=0,
        uptime=1,
        software="test",
    )
    relay = RelayCandidate(supernode.identity.public_key, advert, 1, int(time.time()) + 600)
    peers: list[DhtNode] = []
    try:
        async with asyncio.timeout(WAIT):
            for _ in range(2):
                node = DhtNode(
                    Identity.generate(),
                    listen=("127.0.0.1", 0),
                    bootstrap=[supernode.address],
                    client_mode=True,
                )
                await node.start()
                peers.append(node)
            plans = [await ice_plan_for(node, relay) for node in peers]
        alice_id, bob_id = (node.identity.peer_id for node in peers)
        for node, plan in zip(peers, plans, strict=True):
            assert plan.credentials is not None
            assert plan.credentials.peer_id == node.identity.peer_id  # counted per identity
            assert plan.turn == addresses.udp[0] and plan.turn_transport is TurnTransport.UDP
            assert plan.stun == addresses.udp[0]
            assert plan.relay_id == supernode.identity.peer_id
        hub = MemoryHub()
        alice, bob = hub.endpoint(alice_id), hub.endpoint(bob_id)
        config_a = LinkConfig(ice=plans[0], relay_only=True, setup_timeout=WAIT)
        config_b = LinkConfig(ice=plans[1], relay_only=True, setup_timeout=WAIT)

        async def answer() -> PeerLink:
            return await PeerLink.answer(await bob.receive(), bob, config_b)

        async with asyncio.TaskGroup() as group:
            answering = group.create_task(answer())
            link_a = await PeerLink.dial(bob_id, alice, config_a)
        link_b = answering.result()
        try:
            path = link_a.path()
            assert path.local_kind is CandidateKind.RELAY
            assert path.relay_id == supernode.identity.peer_id
            assert path.describe() == f"relayed via {supernode.identity.peer_id} (udp, ours)"
            link_b.send(b"through our own supernode")
            async with asyncio.timeout(WAIT):
                assert await link_a.receive() == b"through our own supernode"
        finally:
            await link_a.close()
            await link_b.close()
        # One allocation per link end, each after a 401 challenge (never an open relay).
        statistics = service.statistics()
        assert statistics.allocations_created == 2
        assert dict(statistics.refusals).get(401, 0) >= 2
    finally:
        for node in peers:
            await node.close()
        service.close()
        await supernode.close()


def test_ice_servers_from_our_supernode_credentials_and_relay() -> None:
    asyncio.run(scenario())

"""Outbound numbers ask our verifier-trusted ENUM first; only the rest go out the trunk.

Real DHT nodes on loopback hold ENUM records: one verified number points at
carol, a P2P login this gateway does not host (the call rings the bridge
account with To naming carol, which the bridge resolves); one verified number
points at bob, hosted here (his phone rings); one number is claimed without a
verifier's countersignature, one has no record at all: both go to the
upstream trunk (a user agent standing in for the carrier). alice's phone
dials all four through the gateway.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.verifiers import countersign
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.useragent import SipUserAgent, UaCall
from p2pnode.identity import Identity
from p2pnode.records import RecordKind
from tests.integration.directory.test_directory_dht import dht

DOMAIN = "gw.test"
TO_CAROL = "+442079460018"  # verified -> sip:carol@gw.test (P2P, not hosted here)
TO_BOB = "+18009359935"  # verified -> sip:bob@gw.test (hosted here)
SQUATTED = "+442079460019"  # an unverified claim -> sip:carol@gw.test: never followed
UNKNOWN = "+442079460020"  # no record


async def publish(directory: Directory, verifier: Identity) -> None:
    carol, squatter = Identity.generate(), Identity.generate()
    now = time.time()
    for number, login in ((TO_CAROL, "carol"), (TO_BOB, "bob")):
        await directory.publish_enum(carol, number, [sip_directive(f"sip:{login}@{DOMAIN}")])
        vouch = countersign(verifier, RecordKind.ENUM_ENTRY, number, carol.public_key, now=now)
        await directory.publish_enum(carol, number, None, add=[vouch])
    await directory.publish_enum(squatter, SQUATTED, [sip_directive(f"sip:carol@{DOMAIN}")])


async def rings(ua: SipUserAgent) -> UaCall:
    return await asyncio.wait_for(ua.incoming.get(), 10)


def user_of(call: UaCall) -> str | None:
    uri = call.dialog.local_uri.uri  # the To of the INVITE that reached this agent
    return uri.user if isinstance(uri, SipUri) else None


async def scenario(tmp_path: Path) -> None:
    verifier = Identity.generate()
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom, allow_e164=True)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    _, bridge_password = store.add("p2p", None, randbytes=os.urandom)
    carrier = SipUserAgent("carrier", "unused", "carrier.example", ("127.0.0.1", 9))
    await carrier.start()
    assert carrier.address is not None
    async with dht(4) as nodes:
        await publish(
            Directory(DhtNetwork(nodes[1]), trusted=frozenset(), clock=time.time), verifier
        )
        numbers = Directory(
            DhtNetwork(nodes[3]), trusted=frozenset({verifier.public_key}), clock=time.time
        )
        gateway = SipGateway(
            GatewayConfig(DOMAIN, upstream=carrier.address), store, p2p_login="p2p", numbers=numbers
        )
        await gateway.start()
        assert gateway.address is not None
        alice = SipUserAgent("alice", alice_password, DOMAIN, gateway.address)
        bob = SipUserAgent("bob", bob_password, DOMAIN, gateway.address)
        bridge = SipUserAgent("p2p", bridge_password, DOMAIN, gateway.address)
        agents = (alice, bob, bridge)
        try:
            for agent in agents:
                await agent.start()
            await bob.register()
            await bridge.register()
            for dialled, callee, user in (
                (TO_CAROL, bridge, "carol"),
                (TO_BOB, bob, "bob"),
                (SQUATTED, carrier, SQUATTED),
                (UNKNOWN, carrier, UNKNOWN),
            ):
                call = await alice.call(f"sip:{dialled}@{DOMAIN}")
                answered = await rings(callee)
                assert user_of(answered) == user, dialled
                await call.hangup()
                await asyncio.wait_for(answered.ended.wait(), 5)
            # Nothing went anywhere else: each call reached exactly the agent expected.
            assert bob.incoming.empty() and bridge.incoming.empty() and carrier.incoming.empty()
        finally:
            for agent in agents:
                await agent.close()
            await gateway.stop()
            await carrier.close()


def test_numbers_go_to_their_enum_owner_first_and_the_trunk_otherwise(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

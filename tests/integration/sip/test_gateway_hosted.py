"""A registered SIP account becomes a P2P peer: its login is claimed in a real DHT.

Four DHT nodes on loopback; the gateway's directory writes through one of
them. When alice's phone registers, a directory at another node resolves
``alice`` to the identity the gateway holds for her account (unverified: no
verifier vouched for it, which is what a fresh claim is).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from p2pnode.dht import DhtNode
from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.trust import Unverified
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.useragent import SipUserAgent
from p2pnode.identity import Identity
from p2pnode.records import RecordKind

DOMAIN = "gw.test"


def test_registration_claims_the_login_with_the_hosted_identity(tmp_path: Path) -> None:
    async def scenario() -> None:
        seed = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
        await seed.start()
        nodes = [seed]
        gateway = None
        phone = None
        try:
            for _ in range(3):
                node = DhtNode(
                    Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[seed.address]
                )
                async with asyncio.timeout(10):
                    await node.start()
                nodes.append(node)
            store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
            account, password = store.add("alice", None, randbytes=os.urandom)
            directory = Directory(DhtNetwork(nodes[1]), trusted=frozenset(), clock=time.time)
            gateway = SipGateway(GatewayConfig(DOMAIN), store, directory=directory)
            await gateway.start()
            assert gateway.address is not None
            elsewhere = Directory(DhtNetwork(nodes[3]), trusted=frozenset(), clock=time.time)
            before = await elsewhere.resolve(RecordKind.NAME_CLAIM, "alice")
            assert not isinstance(before, Unverified)  # nobody claimed it yet
            phone = SipUserAgent("alice", password, DOMAIN, gateway.address)
            await phone.start()
            await phone.register()
            for _ in range(150):  # the claim runs in the background: up to 15 s
                if gateway.statistics().login_claims:
                    break
                await asyncio.sleep(0.1)
            found = await elsewhere.resolve(RecordKind.NAME_CLAIM, "alice")
            assert isinstance(found, Unverified)
            assert found.candidate.owner == identity_of(account).public_key
            await phone.register()  # a refresh within the hour claims nothing new
            await asyncio.sleep(0.3)
            assert gateway.statistics().login_claims == 1
        finally:
            if phone is not None:
                await phone.close()
            if gateway is not None:
                await gateway.stop()
            for node in nodes:
                await node.close()

    asyncio.run(scenario())

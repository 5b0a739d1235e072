"""A running node judged behind NAT by a later reachability check turns its DHT client.

The node starts as a full DHT node (its configuration says nothing about NAT);
its supernode role then gets a behind-NAT verdict (forced here: on loopback
every dial-back arrives; tests/lab/test_learned_reachability_lab.py reaches the
same verdict through a real NAT). From then on it must not hold others'
records or enter new routing tables: a put stores on one node fewer, and a
node joining afterwards does not add it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from nat.reachability import Reachability
from p2pnode.app.config import parse_config
from p2pnode.app.peer import RoleOptions
from p2pnode.app.roles import DhtClientMode, SupernodeService, role_options
from p2pnode.app.services import DhtService
from p2pnode.connectivity.verdicts import VerdictSource, fixed_verdict
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, sign_record

VERDICT = "behind NAT: 3 of 3 servers voted (forced by the test)"


@dataclass(frozen=True)
class JudgedBehindNat(RoleOptions):
    """The node's role options with the dial-back outcome decided by the test."""

    def verdicts(self, learned: object = None) -> VerdictSource:
        return fixed_verdict(Reachability.BEHIND_NAT, None, VERDICT)


async def stored_by(putter: DhtNode, owner: Identity, subject: str) -> int:
    record = sign_record(owner, RecordKind.PRESENCE, subject, b"x", seq=1, now=time.time(), ttl=600)
    return (await putter.put(record)).stored


async def scenario(home: Path) -> None:
    identity = Identity.load_or_create(home)
    config = parse_config(
        {
            "node": {"listen": "127.0.0.1:0"},
            "supernode": {"relay_search": False},
            "relay": {"listen": "127.0.0.1:0"},
        }
    )
    dht = DhtService(identity, home, config)
    await dht.start()
    others: list[DhtNode] = []
    events: list[object] = []
    switched = asyncio.Event()

    def emit(event: object) -> None:
        events.append(event)
        if isinstance(event, DhtClientMode):
            switched.set()

    service = None
    try:
        for _ in range(2):
            other = DhtNode(Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[dht.address])
            async with asyncio.timeout(10):
                await other.start()
            others.append(other)
        owner = Identity.generate()
        before = await stored_by(others[0], owner, "before")
        options = JudgedBehindNat(**vars(role_options(config)))
        service = SupernodeService(identity, dht, options, learned=None, stun=None, emit=emit)
        await service.start()
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(service.run())
            async with asyncio.timeout(15):
                await switched.wait()
            assert dht.node.config.client_mode
            reasons = [e.reason for e in events if isinstance(e, DhtClientMode)]
            assert len(reasons) == 1 and VERDICT in reasons[0]
            after = await stored_by(others[0], owner, "after")
            assert after == before - 1  # the judged node refuses to hold records now
            newcomer = DhtNode(
                Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[others[0].address]
            )
            async with asyncio.timeout(10):
                await newcomer.start()
            others.append(newcomer)
            await newcomer.get(identity.node_id)  # a lookup meets it again
            assert identity.node_id not in newcomer.core.table
            assert others[1].identity.node_id in newcomer.core.table  # a full node enters
            await service.stop()
            await runner
    finally:
        if service is not None:
            await service.stop()
        for other in others:
            await other.close()
        await dht.stop()


def test_a_node_judged_behind_nat_later_turns_its_dht_client(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

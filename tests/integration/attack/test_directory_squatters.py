"""Issue 10, finding 2, on loopback: squatter keys try to evict a verified ENUM owner.

Real DHT nodes, each on its own 127.x.y.1 address (so each sits in its own
/24 "network"). The owner publishes a verified number; then sixteen squatter
keys store claims on it from ONE address, issued 290 s in the future (inside
the clock-skew allowance) with 30-day lifetimes: the records an owner's
shorter-lived claim once lost to. Then sixteen more from sixteen addresses of
one other /24, and three each from eight more networks. The squatters are real
DHT nodes bound to those addresses; the records are hand-signed. Every honest
node must keep the owner's claim: a reader resolves it as VERIFIED, and the
owner can republish (stored on honest nodes, keeping its endorsement).
"""

from __future__ import annotations

import asyncio
import time

from p2pnode.dht import DhtNode
from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.payloads import EnumEntry, encode_enum_entry
from p2pnode.directory.trust import Verified
from p2pnode.directory.verifiers import countersign
from p2pnode.identity import Identity
from p2pnode.records import MAX_TTL_BY_KIND, RecordKind, SignedRecord, record_key, sign_record

HONEST = 6
NUMBER = "+18009359935"
SKEW = 290
WAIT = 20.0  # a bound on waiting, never a speed assertion


async def node_at(host: str, bootstrap: list[tuple[str, int]]) -> DhtNode:
    node = DhtNode(Identity.generate(), listen=(host, 0), bootstrap=bootstrap)
    async with asyncio.timeout(WAIT):
        await node.start()
    return node


def squatter_claims(count: int) -> list[SignedRecord]:
    """Claims on NUMBER by ``count`` fresh keys, dated SKEW s ahead, living 30 days."""
    entry = encode_enum_entry(EnumEntry((sip_directive("sip:x@squat.example"),)))
    return [
        sign_record(
            Identity.generate(),
            RecordKind.ENUM_ENTRY,
            NUMBER,
            entry,
            seq=1,
            now=time.time() + SKEW,
            ttl=MAX_TTL_BY_KIND[RecordKind.ENUM_ENTRY],
        )
        for _ in range(count)
    ]


async def scenario() -> None:
    owner, verifier = Identity.generate(), Identity.generate()
    trusted = frozenset({verifier.public_key})
    nodes: list[DhtNode] = []
    try:
        seed = await node_at("127.0.20.1", [])
        nodes.append(seed)
        for index in range(1, HONEST):
            nodes.append(await node_at(f"127.0.{20 + index}.1", [seed.address]))
        owner_node = await node_at("127.0.50.1", [seed.address])
        nodes.append(owner_node)
        at_owner = Directory(DhtNetwork(owner_node), trusted=trusted, clock=time.time)
        reader = Directory(DhtNetwork(nodes[HONEST - 1]), trusted=trusted, clock=time.time)

        await at_owner.publish_enum(owner, NUMBER, [sip_directive("sip:pbx@owner.example")])
        endorsement = countersign(
            verifier, RecordKind.ENUM_ENTRY, NUMBER, owner.public_key, now=time.time()
        )
        published = await at_owner.publish_enum(owner, NUMBER, None, add=[endorsement])
        assert published.stored_on >= HONEST - 1
        assert isinstance(await reader.resolve(RecordKind.ENUM_ENTRY, NUMBER), Verified)

        # sixteen squatter keys from one address
        squatter = await node_at("127.0.2.1", [seed.address])
        nodes.append(squatter)
        for record in squatter_claims(16):
            await squatter.put(record)
        # one each from sixteen addresses of one more /24
        for host in range(1, 17):
            lone = await node_at(f"127.0.3.{host}", [seed.address])
            nodes.append(lone)
            for record in squatter_claims(1):
                await lone.put(record)
        # and three more each from eight other networks
        for network in range(3, 11):
            more = await node_at(f"127.0.{network}.1", [seed.address])
            nodes.append(more)
            for record in squatter_claims(3):
                await more.put(record)

        key = record_key(RecordKind.ENUM_ENTRY, b"", NUMBER)
        holding = [
            n for n in nodes[:HONEST] if n.core.store.held(key, owner.public_key) is not None
        ]
        assert len(holding) >= HONEST - 1, "squatters pushed the owner's claim out"
        resolution = await reader.resolve(RecordKind.ENUM_ENTRY, NUMBER)
        assert isinstance(resolution, Verified), type(resolution).__name__
        assert resolution.candidate.owner == owner.public_key

        # the owner can still republish, keeping its endorsement
        again = await at_owner.publish_enum(owner, NUMBER, None)
        assert again.stored_on >= HONEST - 1
        payload_reader = await reader.resolve(RecordKind.ENUM_ENTRY, NUMBER)
        assert isinstance(payload_reader, Verified)
        assert payload_reader.candidate.record.seq == again.record.seq
        assert payload_reader.candidate.verified_by == (verifier.public_key,)
    finally:
        for node in nodes:
            await node.close()


def test_squatters_from_one_address_many_addresses_and_nine_networks_leave_the_owner_verified() -> (
    None
):
    asyncio.run(scenario())

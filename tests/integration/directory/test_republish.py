"""Issue 10 finding 5, over a real DHT on loopback: what a republish does with endorsements.

A republish once carried a revoked endorsement forward, and silently published
without the owner's endorsement when its previous record was not found. Now it
keeps a valid endorsement, drops a revoked one saying so, and says so when
there was no previous record to carry anything over from.
"""

from __future__ import annotations

import asyncio
import time

from p2pnode.dht import DhtNode
from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.trust import Unverified, Verified
from p2pnode.directory.verifiers import claim_endorsements, countersign
from p2pnode.identity import Identity
from p2pnode.records import RecordKind

NODES = 5
NUMBER = "+18009359935"
WAIT = 20.0  # a bound on waiting, never a speed assertion


async def scenario() -> None:
    owner, verifier = Identity.generate(), Identity.generate()
    trusted = frozenset({verifier.public_key})
    seed = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
    nodes = [seed]
    try:
        async with asyncio.timeout(WAIT):
            await seed.start()
            for _ in range(NODES - 1):
                node = DhtNode(Identity.generate(), bootstrap=[seed.address])
                await node.start()
                nodes.append(node)
        at_owner = Directory(DhtNetwork(nodes[1]), trusted=trusted, clock=time.time)
        at_verifier = Directory(DhtNetwork(nodes[2]), trusted=trusted, clock=time.time)
        reader = Directory(DhtNetwork(nodes[3]), trusted=trusted, clock=time.time)

        first = await at_owner.publish_enum(owner, NUMBER, [sip_directive("sip:a@owner.example")])
        assert any("no earlier record" in note for note in first.notes)
        endorsement = countersign(
            verifier, RecordKind.ENUM_ENTRY, NUMBER, owner.public_key, now=time.time()
        )
        endorsed = await at_owner.publish_enum(owner, NUMBER, None, add=[endorsement])
        assert endorsed.notes == ()
        # a plain republish keeps the valid endorsement, and says nothing
        kept = await at_owner.publish_enum(owner, NUMBER, [sip_directive("sip:b@owner.example")])
        assert kept.notes == ()
        assert claim_endorsements(kept.record) == (endorsement,)
        assert isinstance(await reader.resolve(RecordKind.ENUM_ENTRY, NUMBER), Verified)

        # the verifier revokes; the next republish drops the endorsement and says so
        revoked = await at_verifier.publish_revocation(
            verifier, RecordKind.ENUM_ENTRY, NUMBER, owner.public_key
        )
        assert revoked.stored_on >= 1
        after = await at_owner.publish_enum(owner, NUMBER, None)
        assert claim_endorsements(after.record) == ()
        assert len(after.notes) == 1 and "revoked" in after.notes[0]
        resolution = await reader.resolve(RecordKind.ENUM_ENTRY, NUMBER)
        assert isinstance(resolution, Unverified)
        assert resolution.candidate.record.seq == after.record.seq
    finally:
        for node in nodes:
            await node.close()


def test_republish_keeps_valid_endorsements_and_drops_revoked_ones_aloud() -> None:
    asyncio.run(scenario())

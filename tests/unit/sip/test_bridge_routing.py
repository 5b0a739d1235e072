"""The bridge's resolver: peer ids, verified logins, DIDs, verified ENUM records into the gateway.

The directory is the real ``Directory`` (signing, trust rules) over an in-memory
record store; the DHT itself is exercised in
tests/integration/bridge/test_bridge_directory_loopback.py.
"""

from __future__ import annotations

import asyncio
import time

from p2pnode.directory.lookup import Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.payloads import Endorsement
from p2pnode.directory.verifiers import countersign
from p2pnode.gateways.sip.bridge_routing import (
    BridgeCallers,
    PeerResolver,
    PeerTarget,
    PeerVia,
    takes_caller,
)
from p2pnode.gateways.sip.headers import parse_uri
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, record_key

DOMAIN = "gw.test"
VERIFIED = "+442079460018"
UNVERIFIED = "+18009359935"
ELSEWHERE = "+14155552671"


class MemoryNetwork:
    """A record store keyed like the DHT (newest version per owner)."""

    def __init__(self) -> None:
        self.records: dict[bytes, dict[bytes, SignedRecord]] = {}

    async def put(self, record: SignedRecord) -> int:
        slot = self.records.setdefault(record_key(record.kind, record.owner, record.subject), {})
        old = slot.get(record.owner)
        if old is None or old.seq < record.seq:
            slot[record.owner] = record
        return 1

    async def get(self, key: bytes) -> list[SignedRecord]:
        return list(self.records.get(key, {}).values())


async def world() -> tuple[PeerResolver, dict[str, Identity]]:
    people = {name: Identity.generate() for name in ("carol", "dave", "erin", "verifier")}
    verifier = people["verifier"]
    directory = Directory(
        MemoryNetwork(), trusted=frozenset({verifier.public_key}), clock=time.time
    )
    now = time.time()

    def vouch(kind: RecordKind, subject: str, who: Identity) -> list[Endorsement]:
        return [countersign(verifier, kind, subject, who.public_key, now=now)]

    carol, dave, erin = people["carol"], people["dave"], people["erin"]
    await directory.claim_name(carol, "carol", add=vouch(RecordKind.NAME_CLAIM, "carol", carol))
    await directory.claim_name(dave, "dave")  # nobody vouches
    for owner, number, uri, verified in (
        (carol, VERIFIED, f"sip:carol@{DOMAIN}", True),
        (dave, UNVERIFIED, f"sip:carol@{DOMAIN}", False),  # a squatter pointing at carol
        (erin, ELSEWHERE, "sip:desk@pbx.example", True),  # verified, but not into P2P
    ):
        await directory.publish_enum(owner, number, [sip_directive(uri)])
        if verified:
            add = vouch(RecordKind.ENUM_ENTRY, number, owner)
            await directory.publish_enum(owner, number, None, add=add)
    resolver = PeerResolver(directory, gateway_domain=DOMAIN, dids={"+49 30 556": "carol"})
    return resolver, people


def test_what_a_phone_dials_resolves_only_through_trusted_records() -> None:
    async def run() -> None:
        resolver, people = await world()
        carol = people["carol"].peer_id
        assert await resolver.resolve("Carol") == PeerTarget(carol, PeerVia.LOGIN, "carol")
        assert await resolver.resolve(VERIFIED) == PeerTarget(carol, PeerVia.ENUM, "carol")
        assert await resolver.resolve("4930556") == PeerTarget(carol, PeerVia.DID, "carol")
        dave = people["dave"].peer_id
        assert await resolver.resolve(dave.upper()) == PeerTarget(dave, PeerVia.PEER_ID)
        # an unverified login only when the operator allows it
        assert await resolver.resolve("dave") is None
        resolver.allow_unverified = True
        unverified = await resolver.resolve("dave")
        assert unverified == PeerTarget(dave, PeerVia.LOGIN_UNVERIFIED, "dave")
        # an unverified ENUM claim is never followed, even with unverified logins allowed
        assert await resolver.resolve(UNVERIFIED) is None
        # a verified number that points outside the P2P network, unknown names and numbers
        assert await resolver.resolve(ELSEWHERE) is None
        assert await resolver.resolve("nobody") is None
        assert await resolver.resolve("+4930999") is None
        assert await resolver.resolve("not a login!") is None
        assert await resolver.peer_id("carol") == carol

    asyncio.run(run())


def test_bridges_split_callers_hosted_and_foreign() -> None:
    alice = parse_uri("sip:alice@gw.test")
    bob = parse_uri("sip:bob@GW.test")
    carrier = parse_uri("sip:carrier@other.example")
    tel = parse_uri("tel:+4930123")
    assert all(takes_caller(BridgeCallers.ANY, u, DOMAIN, "alice") for u in (alice, carrier, tel))
    assert takes_caller(BridgeCallers.HOSTED, alice, DOMAIN, "alice")
    assert not takes_caller(BridgeCallers.HOSTED, bob, DOMAIN, "alice")
    assert not takes_caller(BridgeCallers.HOSTED, carrier, DOMAIN, "carrier")
    assert takes_caller(BridgeCallers.FOREIGN, carrier, DOMAIN, "p2p")
    assert takes_caller(BridgeCallers.FOREIGN, tel, DOMAIN, "p2p")
    assert not takes_caller(BridgeCallers.FOREIGN, bob, DOMAIN, "p2p")

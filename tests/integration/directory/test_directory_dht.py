"""The directory over a real DHT on loopback: owners publish, a verifier signs, a third node
resolves; and the DNS gateway answers from the DHT (dig over UDP and TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from p2pnode.dht import DhtNode
from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.tollfree import parse_tollfree
from p2pnode.directory.trust import Ambiguous, NotFound, Unverified, Verified
from p2pnode.directory.verifiers import MAX_VALIDITY, RevocationTooShortError, countersign
from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig, RouteCache
from p2pnode.identity import Identity
from p2pnode.records import RecordKind
from tests.harness.tools import require_tool

NODES = 8
NUMBER = "+18009359935"  # the owner's, verified
SQUATTED = "+18005550199"  # only a squatter claims it; toll-free rule covers it
LONELY = "+442079460018"  # only a squatter claims it; no fallback
TOLLFREE = "E2U+sip=100|10|!^\\+1(800[0-9]{7})$!sip:\\1@tollfree.example.net!\n"


@contextlib.asynccontextmanager
async def dht(count: int) -> AsyncIterator[list[DhtNode]]:
    """``count`` real DHT nodes on loopback, all joined through the first."""
    seed = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
    await seed.start()
    nodes = [seed]
    try:
        for _ in range(count - 1):
            node = DhtNode(Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[seed.address])
            async with asyncio.timeout(10):
                await node.start()
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def dig(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        require_tool("dig", "dnsutils"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(15):
        out, _ = await process.communicate()
    return out.decode()


async def _scenario(with_dns: bool) -> None:
    owner, squatter, verifier = Identity.generate(), Identity.generate(), Identity.generate()
    trusted = frozenset({verifier.public_key})
    async with dht(NODES) as nodes:
        at_owner = Directory(DhtNetwork(nodes[1]), trusted=trusted, clock=time.time)
        at_squatter = Directory(DhtNetwork(nodes[2]), trusted=trusted, clock=time.time)
        at_verifier = Directory(DhtNetwork(nodes[3]), trusted=trusted, clock=time.time)
        third = Directory(
            DhtNetwork(nodes[-1]),
            trusted=trusted,
            clock=time.time,
            tollfree=parse_tollfree(TOLLFREE),
        )
        published = await at_owner.publish_enum(
            owner, NUMBER, [sip_directive("sip:pbx@owner.example")]
        )
        assert published.stored_on >= 1
        await at_squatter.publish_enum(squatter, NUMBER, [sip_directive("sip:x@squat.example")])
        # two unverified claims: never a silent pick
        result = await third.resolve(RecordKind.ENUM_ENTRY, NUMBER)
        assert isinstance(result, Ambiguous) and len(result.candidates) == 2

        # the verifier inspects the pending claim, countersigns the owner's key
        records, _ = await at_verifier.fetch(RecordKind.ENUM_ENTRY, NUMBER)
        claim = next(r for r in records if r.owner == owner.public_key)
        endorsement = countersign(
            verifier, RecordKind.ENUM_ENTRY, NUMBER, claim.owner, now=time.time()
        )
        await at_owner.publish_enum(owner, NUMBER, None, add=[endorsement])
        result = await third.resolve(RecordKind.ENUM_ENTRY, NUMBER)
        assert isinstance(result, Verified) and result.candidate.owner == owner.public_key
        # the owner changes routes without re-verification
        await at_owner.publish_enum(owner, NUMBER, [sip_directive("sip:new@owner.example")])
        route = await third.route(NUMBER)
        assert route is not None and route.source == "verified"
        assert route.directives[0].uri_for(NUMBER) == "sip:new@owner.example"

        # logins follow the same rules
        await at_owner.claim_name(owner, "alice")
        name = await third.resolve(RecordKind.NAME_CLAIM, "alice")
        assert isinstance(name, Unverified) and name.candidate.fingerprint == owner.fingerprint
        assert isinstance(await third.resolve(RecordKind.NAME_CLAIM, "nobody"), NotFound)

        # squatter-only numbers: toll-free fallback where configured, else nothing
        await at_squatter.publish_enum(squatter, SQUATTED, [sip_directive("sip:x@squat.example")])
        await at_squatter.publish_enum(squatter, LONELY, [sip_directive("sip:x@squat.example")])
        tollfree_route = await third.route(SQUATTED)
        assert tollfree_route is not None and tollfree_route.source == "tollfree"
        assert await third.route(LONELY) is None

        if with_dns:
            await _dns_checks(third)

        # the verifier revokes: the owner's claim falls back to unverified. A revocation
        # that would expire before the (365-day) endorsement it voids is refused; the
        # default one outlives any endorsement and the DHT nodes take it.
        with pytest.raises(RevocationTooShortError):
            await at_verifier.publish_revocation(
                verifier, RecordKind.ENUM_ENTRY, NUMBER, owner.public_key, lifetime=30 * 86400
            )
        revoked = await at_verifier.publish_revocation(
            verifier, RecordKind.ENUM_ENTRY, NUMBER, owner.public_key
        )
        assert revoked.stored_on >= 1
        assert revoked.record.expires_at - revoked.record.issued_at == MAX_VALIDITY
        result = await third.resolve(RecordKind.ENUM_ENTRY, NUMBER)
        assert isinstance(result, Ambiguous) and not result.conflict


async def _dns_checks(directory: Directory) -> None:
    routes = RouteCache(directory.route, time.monotonic)
    core = EnumDnsCore(GatewayConfig(rate_limit=0), routes.route_nowait)
    server = EnumDnsServer(core, routes, route_wait=3.0)
    async with server.running("127.0.0.1", 0) as (host, port):
        common = ["@" + host, "-p", str(port), "+tries=1", "+time=5", "-t", "NAPTR"]
        line = '100 10 "u" "E2U+sip" "!^.*$!sip:new@owner.example!" .'
        assert (await dig(*common, "+short", "5.3.9.9.5.3.9.0.0.8.1.e164.arpa")).strip() == line
        assert (await dig(*common, "+short", "+tcp", "53995390081.enum")).strip() == line
        squatted = await dig(*common, "+short", "9.9.1.0.5.5.5.0.0.8.1.e164.arpa")
        assert squatted.strip() == (
            '100 10 "u" "E2U+sip" "!^\\\\+1(800[0-9]{7})$!sip:\\\\1@tollfree.example.net!" .'
        )
        lonely = await dig(*common, "8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa")
        assert "status: NXDOMAIN" in lonely and "SOA" in lonely
        lonely_tcp = await dig(*common, "+tcp", "8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa")
        assert "status: NXDOMAIN" in lonely_tcp


def test_owner_publishes_verifier_signs_third_node_resolves() -> None:
    asyncio.run(_scenario(with_dns=False))


@pytest.mark.interop
def test_dns_gateway_answers_from_the_dht() -> None:
    asyncio.run(_scenario(with_dns=True))

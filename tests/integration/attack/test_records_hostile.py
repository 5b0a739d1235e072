"""Issue 10, findings 1 and 5, on loopback with real DHT nodes.

Finding 1 (the credentials extension): requests whose fields are nested ~1,000
deep once raised ``RecursionError`` in the credentials decoder (a traceback per
datagram, ~600 KB of log for 400 datagrams) on every node, relay or not. Now
they are dropped as undecodable, nothing is logged with a traceback, and a
well-formed request to a node that does not relay still gets its short,
final UNAVAILABLE.

Finding 5 (equivocation): an owner signs two different records with one seq;
whichever each node saw first used to win. Now every node and every reader
ends on the same one (the greater encoded bytes), in either arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import time

import nacl.public
import pytest

from p2pnode.connectivity.credentials import (
    CREDENTIALS_CODE,
    CredentialIssuer,
    CredentialStatus,
    decode_reply,
    encode_request,
    signed_request,
)
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, sign_record

NODES = 5
WAIT = 20.0  # a bound on waiting, never a speed assertion
HOSTILE = 5  # one per request field


async def network(count: int) -> list[DhtNode]:
    seed = DhtNode(Identity.generate())
    nodes = [seed]
    async with asyncio.timeout(WAIT):
        await seed.start()
        for _ in range(count - 1):
            node = DhtNode(Identity.generate(), bootstrap=[seed.address])
            await node.start()
            nodes.append(node)
    return nodes


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_nested_credentials_requests_are_dropped_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        nodes = await network(2)
        target, attacker = nodes
        issuer = CredentialIssuer(
            b"s" * 32,
            "p2pnode",
            own_key=target.identity.public_key,
            unavailable=lambda: "client: --no-relay",
        )
        issuer.register(target)
        key = nacl.public.PrivateKey.generate()
        request = signed_request(
            attacker.identity,
            target.identity.public_key,
            bytes(key.public_key),
            3600,
            time.time(),
        )
        good = encode_request(request)
        try:
            caplog.clear()
            received = target.statistics().datagrams_in
            with caplog.at_level(logging.DEBUG):
                for index in range(HOSTILE):
                    field = index % len(good)
                    hostile = (*good[:field], nested(1000), *good[field + 1 :])
                    async with asyncio.timeout(WAIT):
                        result = await attacker.extension_request(
                            target.address, CREDENTIALS_CODE, hostile, target.identity.public_key
                        )
                    assert result.fields is None  # dropped: no answer
            statistics = target.statistics()
            assert statistics.datagrams_in - received >= HOSTILE  # they did arrive
            assert sum(statistics.drops.values()) >= HOSTILE  # each dropped and counted
            assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
            assert issuer.outcomes == {}
            async with asyncio.timeout(WAIT):
                answer = await attacker.extension_request(
                    target.address, CREDENTIALS_CODE, good, target.identity.public_key
                )
            assert answer.fields is not None
            reply = decode_reply(answer.fields)
            assert reply.status is CredentialStatus.UNAVAILABLE
            assert issuer.outcomes == {"unavailable": 1}
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("greater_first", [False, True])
def test_equal_seq_equivocation_converges_on_every_node(greater_first: bool) -> None:
    async def scenario() -> None:
        nodes = await network(NODES)
        owner = Identity.generate()
        now = time.time()
        one, two = (
            sign_record(owner, RecordKind.CONTACT, "main", body, seq=7, now=now, ttl=600)
            for body in (b"device one", b"device two")
        )
        low, high = sorted((one, two), key=lambda r: r.encoded)
        first, second = (high, low) if greater_first else (low, high)
        try:
            async with asyncio.timeout(WAIT):
                await nodes[1].put(first)
                await nodes[2].put(second)
                held = [n.core.store.held(first.key, owner.public_key) for n in nodes]
                assert {r.encoded for r in held if r is not None} == {high.encoded}
                for reader in (nodes[3], nodes[4]):
                    found = await reader.get(first.key)
                    assert [r.encoded for r in found.records] == [high.encoded]
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(scenario())

"""Issue 10, findings 1 and 4, on loopback: a hostile DHT peer built from raw datagrams.

Finding 1: a node near a key answers FIND_VALUE with a record nested ~1,000
deep (and with junk); the honest reader's lookup must still complete with the
honest copy, quickly, with no traceback, and count it against that contact.

Finding 4: requests whose source is an address the node has seen answer it
(a "verified" address) but that do not echo the cookie issued to that key at
that address get at most the unverified budget back: no reflection onto a peer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import cast

import msgpack
import pytest

from p2pnode.dht import DhtConfig, DhtNode
from p2pnode.dht.addresses import AMPLIFICATION_FACTOR, UNVERIFIED_PAD_TO
from p2pnode.dht.keys import Address
from p2pnode.dht.messages import (
    MAX_FIELD_DEPTH,
    PROTOCOL_VERSION,
    FindNode,
    FindValue,
    Flags,
    Frame,
    Message,
    Nodes,
    Ping,
    Pong,
    StoreStatus,
    Value,
    decode_frame,
    encode_frame,
)
from p2pnode.dht.protocol import PONG_CONTEXT
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, sign_record

HONEST = 6
WAIT = 10.0  # a bound on waiting, never a speed assertion
LOOPBACK = DhtConfig().sharing_ip(HONEST + 2)


def nested_record(depth: int = 990) -> bytes:
    """A record-shaped array whose ``version`` is an array nested ``depth`` deep."""
    version: object = 1
    for _ in range(depth):
        version = [version]
    fields = [version, 1, bytes(32), "x", 1, 1, 2, b"", bytes(64)]
    return msgpack.packb(fields, use_bin_type=True)


class HostilePeer(asyncio.DatagramProtocol):
    """Speaks the DHT by hand: proves its key, then answers FIND_VALUE with junk records."""

    def __init__(self, records: tuple[bytes, ...]) -> None:
        self.identity = Identity.generate()
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None
        self.find_values = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        frame = decode_frame(data)
        source = (str(addr[0]), int(str(addr[1])))
        reply: Message | None = None
        match frame.message:
            case Ping(nonce):
                signature = self.identity.sign(PONG_CONTEXT + nonce + frame.sender_key)
                reply = Pong(signature, source)
            case FindNode():
                reply = Nodes(())
            case FindValue():
                self.find_values += 1
                reply = Value(self.records, len(self.records), ())
        if reply is not None and self.transport is not None:
            identity = self.identity
            out = Frame(reply, frame.request_id, identity.public_key, identity.node_id, 0)
            self.transport.sendto(encode_frame(out), addr)


async def honest_network(count: int) -> list[DhtNode]:
    seed = DhtNode(Identity.generate(), config=LOOPBACK)
    await seed.start()
    nodes = [seed]
    for _ in range(count - 1):
        node = DhtNode(Identity.generate(), bootstrap=[seed.address], config=LOOPBACK)
        await node.start()
        nodes.append(node)
    return nodes


def run(test: Callable[[], Coroutine[object, object, None]]) -> None:
    asyncio.run(test())


def test_a_peer_answering_nested_and_junk_records_does_not_stall_the_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        nodes = await honest_network(HONEST)
        owner = Identity.generate()
        record = sign_record(
            owner, RecordKind.PRESENCE, "alice", b"here", seq=1, now=time.time(), ttl=600
        )
        hostile = HostilePeer((nested_record(), b"\x93\x01\x02", nested_record(300)))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: hostile, local_addr=("127.0.0.1", 0)
        )
        hostile_address: Address = transport.get_extra_info("sockname")[:2]
        reader = DhtNode(
            Identity.generate(),
            bootstrap=[hostile_address, nodes[0].address],
            # A quorum above the network's size: the lookup asks every node, the
            # hostile one included, wherever its id falls.
            config=dataclasses.replace(LOOPBACK, quorum=HONEST + 2),
        )
        try:
            put = await nodes[1].put(record)
            assert put.stored >= 1
            await reader.start()
            assert reader.core.table.get(hostile.identity.node_id) is not None
            caplog.clear()
            with caplog.at_level(logging.DEBUG):
                async with asyncio.timeout(WAIT):
                    found = await reader.get(record.key)
            assert hostile.find_values >= 1, "the hostile peer was never asked"
            assert [r.encoded for r in found.records] == [record.encoded]
            stats = reader.statistics()
            assert stats.read_rejects.get("undecodable", 0) >= 1
            assert stats.drops.get("malformed reply content", 0) >= 1
            assert "handler error" not in stats.drops
            assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
            # The same nested record as a proven STORE gets a defined refusal, not silence.
            stored = await reader.store_at(
                nodes[2].address, record.key, nested_record(), nodes[2].identity.public_key
            )
            assert stored.status is StoreStatus.REJECTED
            assert stored.reason == "undecodable"
        finally:
            transport.close()
            await reader.close()
            for node in nodes:
                await node.close()

    run(scenario)


def test_deep_extension_fields_are_dropped_and_counted() -> None:
    async def scenario() -> None:
        (node,) = await honest_network(1)
        seen: list[object] = []
        node.register_extension(64, lambda fields: fields, lambda r, peer, now: seen.append(r))
        attacker = Identity.generate()
        deep: object = 0
        for _ in range(1000):
            deep = [deep]
        head = [64, bytes(8), attacker.public_key, attacker.node_id, 0, b"", b""]
        data = bytes((PROTOCOL_VERSION,)) + msgpack.packb([*head, deep, b""], use_bin_type=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(50):
                sock.sendto(data, node.address)
            await asyncio.sleep(0.3)
            assert not seen
            drops = node.statistics().drops
            assert drops.get("undecodable", 0) >= 1
            assert "handler error" not in drops
            assert MAX_FIELD_DEPTH < 1000
        finally:
            sock.close()
            await node.close()

    run(scenario)


def _frame(
    identity: Identity, message: Message, cookie: bytes = b"", rid: int = 0, pad: int = 0
) -> bytes:
    request_id = rid.to_bytes(8, "big")
    frame = Frame(message, request_id, identity.public_key, identity.node_id, 0, cookie)
    return encode_frame(frame, pad_to=pad)


async def _replies(sock: socket.socket, wait: float = 0.3) -> list[bytes]:
    await asyncio.sleep(wait)
    received: list[bytes] = []
    while True:
        try:
            received.append(sock.recv(65536))
        except BlockingIOError:
            return received


def test_spoofed_requests_from_a_verified_address_get_at_most_the_unverified_budget() -> None:
    """Finding 4: the victim's address answered the target, yet spoofed requests from it
    (the attacker's key, or the victim's key without its cookie) get at most
    AMPLIFICATION_FACTOR times their size; the victim itself, echoing its cookie, gets all."""

    async def scenario() -> None:
        nodes = await honest_network(HONEST + 1)
        target = nodes[0]
        victim = Identity.generate()
        attacker = Identity.generate()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        try:
            # The victim talks to the target as a node would: a FIND_NODE, then it
            # answers the target's challenge PING. Under the old rule this made its
            # address "verified" for anyone.
            first = _frame(victim, FindNode(bytes(20)), pad=UNVERIFIED_PAD_TO)
            sock.sendto(first, target.address)
            cookie = b""
            for data in await _replies(sock):
                frame = decode_frame(data)
                if isinstance(frame.message, Nodes):
                    cookie = frame.message.token
                if isinstance(frame.message, Ping):
                    signed = PONG_CONTEXT + frame.message.nonce + frame.sender_key
                    observed = sock.getsockname()[:2]
                    pong = Pong(victim.sign(signed), observed)
                    reply = Frame(pong, frame.request_id, victim.public_key, victim.node_id, 0)
                    sock.sendto(encode_frame(reply), target.address)
            assert cookie, "the target handed the victim no cookie"
            await _replies(sock, 0.1)

            # Spoofed: requests from the victim's address (the test owns that socket,
            # as a spoofer would own the source field), not echoing the cookie.
            sent = 0
            spoofed_requests: list[tuple[Identity, Message]] = [
                (attacker, FindNode(bytes(20))),
                (victim, FindNode(bytes(20))),
            ] * 10 + [(attacker, FindValue(bytes(20), 0)), (attacker, Ping(bytes(16)))] * 5
            for rid, (identity, message) in enumerate(spoofed_requests):
                data = _frame(identity, message, rid=rid + 1)
                sent += len(data)
                sock.sendto(data, target.address)
            received = sum(len(d) for d in await _replies(sock))
            assert received <= AMPLIFICATION_FACTOR * sent
            # A cookie issued to the victim is no good with the attacker's key either.
            data = _frame(attacker, FindNode(bytes(20)), cookie, rid=99)
            sock.sendto(data, target.address)
            spoofed = await _replies(sock)
            assert sum(len(d) for d in spoofed) <= AMPLIFICATION_FACTOR * len(data)

            # The real victim, echoing its cookie, gets a full answer (k contacts).
            data = _frame(victim, FindNode(bytes(20)), cookie, rid=100)
            sock.sendto(data, target.address)
            full = [decode_frame(d) for d in await _replies(sock)]
            nodes_replies = [f.message for f in full if isinstance(f.message, Nodes)]
            assert nodes_replies and len(nodes_replies[0].contacts) == HONEST
            assert full[0].flags & Flags.VERIFIED_YOU
            reply_bytes = len(encode_frame(full[0]))
            assert reply_bytes > AMPLIFICATION_FACTOR * len(data), "control: the budget binds"
        finally:
            sock.close()
            for node in nodes:
                await node.close()

    run(scenario)

"""Real UDP on 127.0.0.1 (ephemeral ports), many nodes in one process.

Proves: every node finds every other node's record; a malicious peer speaking
raw datagrams gets no STORE admitted before it proves its key, and once it has,
cannot get forged, re-keyed, rolled-back or oversized records stored anywhere;
garbage is dropped and counted while the node keeps serving; a node restarted
with the same home keeps its identity and its neighbours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2pnode.app.node import DHT_STATE_FILE, P2PNode
from p2pnode.dht import DhtConfig, DhtNode
from p2pnode.dht.messages import (
    Flags,
    Frame,
    Ping,
    Pong,
    Store,
    StoreResult,
    StoreStatus,
    decode_frame,
    encode_frame,
)
from p2pnode.dht.proofs import sign_store_proof
from p2pnode.dht.protocol import PING_PAD_TO
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, sign_record

NODES = 50
TTL = 3600
REPLY_WAIT = 10.0  # a bound on waiting, not a speed assertion
# Rate limits are per source IP and every node here sends from 127.0.0.1: without
# this, the NODES nodes would share one host's budget and throttle each other.
LOOPBACK = DhtConfig().sharing_ip(NODES)


async def build_network(count: int) -> list[DhtNode]:
    seed = DhtNode(Identity.generate(), config=LOOPBACK)
    await seed.start()
    nodes = [seed]
    for _ in range(count - 1):
        node = DhtNode(Identity.generate(), bootstrap=[seed.address], config=LOOPBACK)
        result = await node.start()
        assert result is not None and result.answered == 1
        nodes.append(node)
    return nodes


def with_network(test: Callable[[list[DhtNode]], Awaitable[None]]) -> None:
    """Run ``test`` against a fresh network of ``NODES`` nodes, closed afterwards."""

    async def main() -> None:
        nodes = await build_network(NODES)
        try:
            await test(nodes)
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(main())


def presence(identity: Identity, seq: int, text: str = "online") -> SignedRecord:
    return sign_record(
        identity, RecordKind.PRESENCE, "online", text.encode(), seq=seq, now=time.time(), ttl=TTL
    )


def test_every_node_finds_every_record() -> None:
    with_network(_every_node_finds_every_record)


async def _every_node_finds_every_record(network: list[DhtNode]) -> None:
    records = []
    for node in network:
        record = presence(node.identity, 1, f"{node.address}")
        put = await node.put(record)
        assert put.stored >= 10, put
        records.append(record)
    for node in network:
        found = await asyncio.gather(*(node.get(r.key) for r in records))
        for record, got in zip(records, found, strict=True):
            assert got.records == (record,)


class RawPeer:
    """A malicious peer: hand-made datagrams on a plain UDP socket, no DHT code path."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.sent = 0
        self.tokens: dict[bytes, bytes] = {}  # node key -> the store token it handed us

    def send(self, message: Store | Ping, address: tuple[str, int]) -> bytes:
        self.sent += 1
        request_id = self.sent.to_bytes(8, "big")
        frame = Frame(
            message, request_id, self.identity.public_key, self.identity.node_id, Flags.CLIENT
        )
        pad = PING_PAD_TO if isinstance(message, Ping) else 0  # as honest requesters do
        self.sock.sendto(encode_frame(frame, pad_to=pad), address)
        return request_id

    def send_proven(self, key: bytes, encoded: bytes, node: DhtNode, token: bytes) -> None:
        """A STORE carrying our proof over ``token``, which ``node`` handed us."""
        proof = sign_store_proof(self.identity, token, node.identity.public_key)
        self.send(Store(key, encoded, token, proof), node.address)

    async def replies(self, count: int) -> list[Frame]:
        loop = asyncio.get_running_loop()
        frames: list[Frame] = []
        async with asyncio.timeout(REPLY_WAIT):
            while len(frames) < count:
                data = await loop.sock_recv(self.sock, 65536)
                frame = decode_frame(data)
                if isinstance(frame.message, StoreResult | Pong):
                    frames.append(frame)
        return frames

    def close(self) -> None:
        self.sock.close()


async def attack(
    peer: RawPeer,
    targets: list[DhtNode],
    key: bytes,
    encoded: bytes,
    tokens: dict[bytes, bytes] | None = None,
) -> list[tuple[str, str]]:
    """STORE ``encoded`` at every target, proven when ``tokens`` (node key -> token) is
    given; (status, reason) of each answer. UNPROVEN answers' tokens go into ``tokens``."""
    for node in targets:
        if tokens is None:
            peer.send(Store(key, encoded), node.address)
        else:
            peer.send_proven(key, encoded, node, tokens[node.identity.public_key])
    verdicts = []
    for frame in await peer.replies(len(targets)):
        assert isinstance(frame.message, StoreResult)
        verdicts.append((frame.message.status.name, frame.message.reason))
        if frame.message.status is StoreStatus.UNPROVEN and tokens is None:
            peer.tokens[frame.sender_key] = frame.message.token
    return verdicts


def test_malicious_raw_stores_are_rejected_everywhere() -> None:
    with_network(_malicious_raw_stores_are_rejected_everywhere)


async def _malicious_raw_stores_are_rejected_everywhere(network: list[DhtNode]) -> None:
    victim, other = network[3], network[7]
    genuine = presence(victim.identity, 1)
    assert (await victim.put(genuine)).stored >= 10
    newer = presence(victim.identity, 2, "moved")
    assert (await victim.put(newer)).stored >= 10
    holders = [n for n in network if n.core.store.held(newer.key, newer.owner) == newer]
    assert len(holders) >= 10
    mallory = RawPeer()
    forged = dataclasses.replace(newer, seq=3, payload=b"evil")
    resigned = presence(mallory.identity, 9, "evil")
    other_record = presence(other.identity, 1)  # genuine, but filed under another key
    oversized = genuine.encoded + os.urandom(1300)
    unproven = ("UNPROVEN", "unproven")
    try:
        # 1. Raw STOREs from a key nobody has seen proven: refused before the record is
        #    looked at, each refusal carrying a token to prove the key with.
        for record in (forged, resigned, other_record):
            assert await attack(mallory, network, newer.key, record.encoded) == [unproven] * NODES
        assert await attack(mallory, holders, newer.key, genuine.encoded) == [unproven] * len(
            holders
        )
        assert set(mallory.tokens) == {node.identity.public_key for node in network}
        # Size is checked before the proof: an oversized record costs no signature check.
        too_large = ("REJECTED", "too-large")
        assert await attack(mallory, network, newer.key, oversized) == [too_large] * NODES
        # 2. Proven with those tokens, each STORE fails for its record's own fault.
        tokens = mallory.tokens
        verdicts = await attack(mallory, network, newer.key, forged.encoded, tokens)
        assert verdicts == [("REJECTED", "bad-signature")] * NODES
        verdicts = await attack(mallory, network, newer.key, resigned.encoded, tokens)
        assert verdicts == [("REJECTED", "key-mismatch")] * NODES
        verdicts = await attack(mallory, network, newer.key, other_record.encoded, tokens)
        assert verdicts == [("REJECTED", "key-mismatch")] * NODES
        verdicts = await attack(mallory, holders, newer.key, genuine.encoded, tokens)
        assert verdicts == [("REJECTED", "rollback")] * len(holders)
    finally:
        mallory.close()
    for node in network:
        held = node.core.store.get(newer.key, time.time())
        assert held in ([], [newer])
        assert mallory.identity.node_id not in node.core.table
        rejects = node.statistics().store_rejects
        # Honest STOREs (replication) may also meet "unproven" once and retry: at least ours.
        assert rejects["unproven"] >= 3 + (1 if node in holders else 0)
        assert rejects["bad-signature"] == 1 and rejects["key-mismatch"] == 2
        assert rejects["too-large"] == 1 and "bad-proof" not in rejects
        assert rejects.get("rollback", 0) == (1 if node in holders else 0)
    reader = network[-1]
    assert (await reader.get(newer.key)).records == (newer,)


def test_garbage_is_dropped_and_counted_while_serving() -> None:
    with_network(_garbage_is_dropped_and_counted_while_serving)


async def _garbage_is_dropped_and_counted_while_serving(network: list[DhtNode]) -> None:
    target = network[5]
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for n in range(200):
            junk.sendto(
                os.urandom(n % 90 + 1) if n % 2 else b"\x01" + os.urandom(60), target.address
            )
        peer = RawPeer()
        try:
            peer.send(Ping(bytes(16)), target.address)
            (pong,) = await peer.replies(1)
            assert isinstance(pong.message, Pong)
            assert pong.message.observed == peer.sock.getsockname()
        finally:
            peer.close()
    finally:
        junk.close()
    assert target.statistics().drops["undecodable"] == 200
    record = presence(network[9].identity, 1)
    await network[9].put(record)
    assert (await target.get(record.key)).records == (record,)


def test_restart_with_same_home_keeps_identity_and_contacts(tmp_path: Path) -> None:
    asyncio.run(_restart_with_same_home(tmp_path))


async def _restart_with_same_home(tmp_path: Path) -> None:
    nodes = await build_network(8)
    try:
        home = tmp_path / "home"
        first = P2PNode(
            home,
            listen=("127.0.0.1", 0),
            bootstrap=[nodes[0].address],
            config=LOOPBACK,
            create=True,
        )
        await first.start()
        identity, contacts = first.identity, len(first.dht.core.table)
        assert contacts >= 5
        await first.stop()
        assert (home / DHT_STATE_FILE).exists()
        assert (home / "identity.key").stat().st_mode & 0o777 == 0o600
        # No bootstrap: saved contacts only.
        again = P2PNode(home, listen=("127.0.0.1", 0), config=LOOPBACK)
        await again.start()
        try:
            assert again.identity.public_key == identity.public_key
            assert again.identity.node_id == identity.node_id
            assert len(again.dht.core.table) >= contacts - 1
            record = presence(again.identity, 1)
            assert (await again.dht.put(record)).stored >= 5
        finally:
            await again.stop()
    finally:
        for node in nodes:
            await node.close()

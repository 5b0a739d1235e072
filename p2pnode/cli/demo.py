"""`p2pnode demo`: a local network of nodes on loopback, signed records, and an attacker.

Honest by construction: every line it prints comes from a real lookup or a real
STORE reply on real UDP sockets (127.0.0.1, ephemeral ports), and it exits 1 if
any lookup missed or any attack record was accepted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2pnode.cli.common import CliError
from p2pnode.cli.records import format_payload
from p2pnode.dht import DhtNode, StoreReply
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, sign_record

__all__ = ["register", "run_demo"]

NAMES = (
    *("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"),
    *("ken", "laura", "mike", "nora", "oscar", "peggy", "quinn", "rupert", "sybil", "trent"),
)
MAX_ROWS = 20
TTL = 3600


@dataclass(frozen=True)
class Lookup:
    looker: str
    owner: str
    record: SignedRecord | None
    expected: SignedRecord
    hops: int
    queries: int
    millis: float


def name_of(index: int) -> str:
    return NAMES[index] if index < len(NAMES) else f"node-{index + 1:03d}"


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def say(text: str = "") -> None:
    print(text, flush=True)


async def start_network(count: int) -> list[DhtNode]:
    seed = DhtNode(Identity.generate())
    await seed.start()
    nodes = [seed]
    for _ in range(count - 1):
        node = DhtNode(Identity.generate(), bootstrap=[seed.address])
        await node.start()
        nodes.append(node)
    return nodes


async def attack(
    mallory: DhtNode, key: bytes, encoded: bytes, owner: DhtNode
) -> tuple[int, Counter[str]]:
    """Send ``encoded`` as a raw STORE to the k nodes closest to ``key``; count the verdicts."""
    closest = await mallory.find_node(key)
    replies: list[StoreReply] = await asyncio.gather(
        *(mallory.store_at(c.address, key, encoded, c.public_key) for c in closest.contacts)
    )
    verdicts: Counter[str] = Counter()
    for reply in replies:
        verdicts["ACCEPTED" if reply.stored else reply.reason] += 1
    return len(replies), verdicts


def verdict_text(asked: int, verdicts: Counter[str]) -> tuple[str, bool]:
    accepted = verdicts.get("ACCEPTED", 0)
    parts = ", ".join(f"{n} {reason}" for reason, n in verdicts.most_common())
    if accepted or not asked:
        return f"ACCEPTED by {accepted}/{asked} ({parts})", False
    return f"rejected by {asked - verdicts.get('timeout', 0)}/{asked} ({parts})", True


async def run_demo(count: int, lookups_per_node: int, seed: int) -> int:
    rng = random.Random(seed)
    say(f"p2pnode demo: {count} DHT nodes on 127.0.0.1 in one process, real UDP")
    say()
    started = time.perf_counter()
    nodes = await start_network(count)
    names = {id(node): name_of(i) for i, node in enumerate(nodes)}
    mallory = DhtNode(Identity.generate(), bootstrap=[nodes[0].address], client_mode=True)
    try:
        await mallory.start()
        sizes = [len(node.core.table) for node in nodes]
        say(
            f"[1/4] {count} nodes up in {(time.perf_counter() - started) * 1000:.0f} ms; "
            f"each has an Ed25519 key, node id = BLAKE2b-160(key); routing tables hold "
            f"{min(sizes)}-{max(sizes)} verified contacts"
        )

        records: dict[int, SignedRecord] = {}
        put_ms: list[float] = []
        stored: list[int] = []
        for node in nodes:
            host, port = node.address
            payload = f"{names[id(node)]} online at {host}:{port}".encode()
            record = sign_record(
                node.identity,
                RecordKind.PRESENCE,
                "online",
                payload,
                seq=1,
                now=time.time(),
                ttl=TTL,
            )
            begin = time.perf_counter()
            result = await node.put(record)
            put_ms.append((time.perf_counter() - begin) * 1000)
            stored.append(result.stored)
            records[id(node)] = record
        say(
            f"[2/4] every node signed and published its presence record: stored at "
            f"{min(stored)}-{max(stored)} nodes each (k={nodes[0].config.k}), "
            f"put median {statistics.median(put_ms):.1f} ms"
        )

        results: list[Lookup] = []
        for node in nodes:
            others = [other for other in nodes if other is not node]
            for other in rng.sample(others, min(lookups_per_node, len(others))):
                expected = records[id(other)]
                begin = time.perf_counter()
                found = await node.get(expected.key)
                millis = (time.perf_counter() - begin) * 1000
                hit = next((r for r in found.records if r.owner == expected.owner), None)
                results.append(
                    Lookup(
                        names[id(node)],
                        names[id(other)],
                        hit,
                        expected,
                        found.hops,
                        found.queries,
                        millis,
                    )
                )
        ok = [r for r in results if r.record == r.expected]
        say(f"[3/4] each node looked up {lookups_per_node} others' records:")
        say()
        header = f"  {'who looked':<11} {'found record of':<16} {'payload':<36} {'signature':<10}"
        say(f"{header} {'hops':>4} {'nodes':>5} {'ms':>6}")
        rows = results[:: max(1, lookups_per_node)][:MAX_ROWS]
        for row in rows:
            shown = format_payload(row.record.payload, 36) if row.record else "(not found)"
            signature = "verified" if row.record else "-"
            say(
                f"  {row.looker:<11} {row.owner:<16} {shown:<36} {signature:<10} "
                f"{row.hops:>4} {row.queries:>5} {row.millis:>6.1f}"
            )
        if len(rows) < len(results):
            say(f"  ... ({len(results) - len(rows)} more lookups not shown)")
        get_ms = [r.millis for r in results]
        say()
        say(
            f"  {len(ok)}/{len(results)} lookups returned the owner's record, every one checked "
            f"against its owner's Ed25519 signature; median {statistics.median(get_ms):.1f} ms, "
            f"p95 {percentile(get_ms, 0.95):.1f} ms, "
            f"mean {statistics.mean(r.hops for r in results):.1f} hops"
        )

        say()
        say("[4/4] mallory (a client node with her own key) sends raw STOREs to the nodes")
        say("      closest to each target key:")
        bob, carol = nodes[1 % count], nodes[2 % count]
        bob_record = records[id(bob)]
        forged = dataclasses.replace(
            bob_record, seq=bob_record.seq + 1, payload=b"bob moved to 203.0.113.66:666"
        )
        asked, verdicts = await attack(mallory, bob_record.key, forged.encoded, bob)
        text, good_forged = verdict_text(asked, verdicts)
        say(f"  forged (bob's record, new payload and seq, old signature): {text}")

        resigned = sign_record(
            mallory.identity,
            RecordKind.PRESENCE,
            "online",
            forged.payload,
            seq=99,
            now=time.time(),
            ttl=TTL,
        )
        asked, verdicts = await attack(mallory, bob_record.key, resigned.encoded, bob)
        text, good_resigned = verdict_text(asked, verdicts)
        say(f"  re-signed by mallory's key, filed under bob's key:         {text}")

        old = records[id(carol)]
        newer = sign_record(
            carol.identity,
            RecordKind.PRESENCE,
            "online",
            old.payload + b" (updated)",
            seq=2,
            now=time.time(),
            ttl=TTL,
        )
        await carol.put(newer)
        asked, verdicts = await attack(mallory, old.key, old.encoded, carol)
        text, good_rollback = verdict_text(asked, verdicts)
        say(f"  rolled back (carol's genuine seq 1 after she put seq 2):   {text}")

        reader = nodes[-1]
        bob_now = await reader.get(bob_record.key)
        carol_now = await reader.get(old.key)
        intact = bob_now.records == (bob_record,) and carol_now.records == (newer,)
        say(
            f"  lookups afterwards return bob's genuine record and carol's seq 2: "
            f"{'yes' if intact else 'NO'}"
        )
        rejects: Counter[str] = Counter()
        for node in nodes:
            rejects.update(node.statistics().store_rejects)
        say(f"  store rejections counted across the network: {dict(rejects.most_common())}")
    finally:
        await mallory.close()
        for node in nodes:
            await node.close()
    passed = len(ok) == len(results) and good_forged and good_resigned and good_rollback and intact
    say()
    elapsed = time.perf_counter() - started
    say(f"demo {'passed' if passed else 'FAILED'} in {elapsed:.1f} s")
    return 0 if passed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    if not 3 <= args.nodes <= 500:
        raise CliError("--nodes must be between 3 and 500")
    if not 1 <= args.lookups <= 50:
        raise CliError("--lookups must be between 1 and 50")
    return asyncio.run(run_demo(args.nodes, args.lookups, args.seed))


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `demo`."""
    demo = subparsers.add_parser(
        "demo",
        help="run a local network of nodes that publish and look up signed records",
        description="Start N DHT nodes on loopback in this process; each publishes a signed "
        "presence record and looks up others'; then an attacker's forged, re-signed and "
        "rolled-back records are rejected. Exits 0 only if everything checks out.",
    )
    demo.add_argument("--nodes", type=int, default=20, help="how many nodes (default 20)")
    demo.add_argument("--lookups", type=int, default=3, help="lookups per node (default 3)")
    demo.add_argument("--seed", type=int, default=1, help="seed for choosing whom to look up")
    demo.set_defaults(func=cmd_demo)

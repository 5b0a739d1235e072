"""The demo's walkthrough (`p2pnode demo`): the whole system, step by step.

A network of DHT nodes publishes and looks up signed records and rejects an
attacker's; the directory settles contested logins and numbers through a
verifier; the ENUM DNS gateway answers NAPTR queries from the DHT; a node that
STUN servers can dial back becomes a supernode and relays a client's datagram.
Then two peers find each other, write and call (steps 8-10): as root, as real
`p2pnode run` nodes behind NATs in a network-namespace lab (``demo/natlab.py``),
else as whole nodes on loopback (``demo/peers.py``); last, phones on the SIP
gateway (``demo/sip.py``).

Honest by construction: every line it prints comes from a real lookup, STORE
reply, DNS answer, relayed datagram, CLI answer or recording, on real sockets
(127.0.0.1 with ephemeral ports, or the lab's namespaces), and it exits 1 if
any step did not check out. The scenario steps live in ``p2pnode.demo.*``; this
module runs them and says what happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import dns.rcode

from p2pnode.demo.directory import DirectoryParties, run_directory_step
from p2pnode.demo.enumdns import query_gateway
from p2pnode.demo.natlab import run_lab_peer_steps
from p2pnode.demo.peers import run_peer_steps
from p2pnode.demo.sip import run_bridge_step, run_sip_step
from p2pnode.demo.supernode import STUN_SERVERS, SupernodeDemo
from p2pnode.dht import DhtConfig, DhtNode, StoreReply
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.trust import Ambiguous, Candidate, Resolution, Unverified, Verified
from p2pnode.identity import Identity
from p2pnode.lab.netns import LabError
from p2pnode.records import RecordKind, SignedRecord, sign_record
from relay.supernode import Role

__all__ = ["DEFAULT_NODES", "run_demo"]

NAMES = (
    *("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"),
    *("ken", "laura", "mike", "nora", "oscar", "peggy", "quinn", "rupert", "sybil", "trent"),
)
MAX_ROWS = 20
TTL = 3600
STEPS = 12
DEFAULT_NODES = 50
LOGIN = "alice"
NUMBER = "+18005550199"  # NANP 555-0100..0199 are reserved for fiction
UNKNOWN_NUMBER = "+18005550100"  # claimed by nobody in the demo
ALICE_URI = "sip:alice@example.net"
MALLORY_URI = "sip:mallory@example.org"
PAYLOAD = b"hello through the supernode"


@dataclass(frozen=True)
class Lookup:
    looker: str
    owner: str
    record: SignedRecord | None
    expected: SignedRecord
    hops: int
    queries: int
    millis: float


def format_payload(payload: bytes, limit: int = 60) -> str:
    """Text when it is printable UTF-8, else hex; shortened to ``limit`` characters."""
    try:
        text = payload.decode("utf-8")
        shown = text if text.isprintable() else payload.hex()
    except UnicodeDecodeError:
        shown = payload.hex()
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def name_of(index: int) -> str:
    return NAMES[index] if index < len(NAMES) else f"node-{index + 1:03d}"


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def say(text: str = "") -> None:
    print(text, flush=True)


async def start_network(count: int) -> list[DhtNode]:
    # Rate limits are per source IP and every node here sends from 127.0.0.1: give that
    # IP the budget of one host per node, or the nodes would throttle each other as one.
    config = DhtConfig().sharing_ip(count)
    seed = DhtNode(Identity.generate(), config=config)
    await seed.start()
    nodes = [seed]
    for _ in range(count - 1):
        node = DhtNode(Identity.generate(), bootstrap=[seed.address], config=config)
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


async def publish_and_look_up(
    nodes: list[DhtNode], names: dict[int, str], lookups_per_node: int, rng: random.Random
) -> tuple[dict[int, SignedRecord], bool]:
    """Steps 2 and 3: every node publishes its presence record, then looks up others'."""
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
        f"[2/{STEPS}] every node signed and published its presence record: stored at "
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
    say(f"[3/{STEPS}] each node looked up {lookups_per_node} others' records:")
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
    hops = Counter(r.hops for r in results)
    spread = ", ".join(f"{h} hop{'s' * (h != 1)}: {n}" for h, n in sorted(hops.items()))
    say()
    say(
        f"  {len(ok)}/{len(results)} lookups returned the owner's record, every one checked "
        f"against its owner's Ed25519 signature; median {statistics.median(get_ms):.1f} ms, "
        f"p95 {percentile(get_ms, 0.95):.1f} ms, "
        f"mean {statistics.mean(r.hops for r in results):.1f} hops ({spread})"
    )
    return records, len(ok) == len(results)


async def attacks(nodes: list[DhtNode], mallory: DhtNode, records: dict[int, SignedRecord]) -> bool:
    """Step 4: forged, re-signed and rolled-back records sent straight to the storers."""
    count = len(nodes)
    say()
    say(f"[4/{STEPS}] mallory (a client node with her own key) sends raw STOREs to the nodes")
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
    return good_forged and good_resigned and good_rollback and intact


async def step(work: Awaitable[bool]) -> bool:
    """Run one step; an error fails that step in one line instead of a traceback."""
    try:
        return await work
    except Exception as error:  # the demo's one boundary: every failure is said, exit 1
        cause: BaseException = error
        while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]  # a TaskGroup's first error says what went wrong
        say(f"  FAILED: {type(cause).__name__}: {cause}")
        return False


def describe_resolution(result: Resolution, names: dict[bytes, str]) -> str:
    def who(candidate: Candidate) -> str:
        return f"{names.get(candidate.owner, 'someone')}'s key ({candidate.fingerprint})"

    if isinstance(result, Verified):
        return f"VERIFIED: {who(result.candidate)}"
    if isinstance(result, Unverified):
        return f"UNVERIFIED: only {who(result.candidate)}"
    if isinstance(result, Ambiguous):
        what = "verified claims conflict" if result.conflict else "unverified claims"
        listed = ", ".join(who(c) for c in result.candidates)
        return f"AMBIGUOUS, {len(result.candidates)} {what}: {listed}"
    return "NOT FOUND"


async def directory_step(
    nodes: list[DhtNode], mallory: DhtNode, verifier: Identity, names: dict[int, str]
) -> bool:
    """Step 5: contested claims on a login and a number, settled by a verifier."""
    alice, resolver = nodes[0], nodes[-1]
    say()
    say(
        f"[5/{STEPS}] directory: alice and mallory both claim the login {LOGIN!r} and the "
        f"number {NUMBER};"
    )
    say(f"      a verifier (its own key, {verifier.fingerprint}) countersigns alice's claims")
    parties = DirectoryParties(alice, mallory, verifier, nodes[len(nodes) // 2], resolver)
    outcome = await run_directory_step(
        parties, login=LOGIN, number=NUMBER, uri=ALICE_URI, squatter_uri=MALLORY_URI
    )
    keys = {alice.identity.public_key: "alice", mallory.identity.public_key: "mallory"}
    for claim in outcome.published:
        what = f'login "{claim.subject}"' if claim.kind is RecordKind.NAME_CLAIM else claim.subject
        what += f" -> {claim.uri}" if claim.uri else ""
        what += " again, countersigned" if claim.endorsed else ""
        say(f"  {keys[claim.by]:<8} published {what:<45} stored on {claim.stored_on} nodes")
    reader = names[id(resolver)]
    results = (
        (f"{LOGIN!r} trusting the verifier", outcome.login_trusted),
        (f"{LOGIN!r} trusting nobody", outcome.login_untrusted),
        (f"{NUMBER} trusting nobody", outcome.number_untrusted),
    )
    for what, result in results:
        say(f"  {reader} resolves {what}: {describe_resolution(result, keys)}")
    route = outcome.route
    if route is None:
        routed = "no route"
    else:
        uris = ", ".join(str(d.uri_for(NUMBER)) for d in route.directives)
        routed = f"{uris} ({route.source}, {keys.get(route.owner or b'', 'someone')}'s record)"
    say(f"  {reader} routes {NUMBER} trusting the verifier: {routed}")
    return outcome.passed


async def dns_step(bootstrap: tuple[str, int], verifier: Identity) -> bool:
    """Step 6: the ENUM DNS gateway answers from the DHT; dnspython asks over UDP and TCP."""
    say()
    say(f"[6/{STEPS}] ENUM DNS gateway, as `p2pnode enum serve` runs it (trusting the verifier),")
    say("      asked by dnspython as a PBX would; answers as dig prints them:")
    outcome = await query_gateway(
        bootstrap,
        frozenset({verifier.public_key}),
        number=NUMBER,
        unknown=UNKNOWN_NUMBER,
        uri=ALICE_URI,
    )
    host, port = outcome.address
    say(f"  gateway on udp+tcp {host}:{port}, joined to the DHT as a client node")
    for exchange in (outcome.udp, outcome.tcp):
        rcode = dns.rcode.to_text(exchange.rcode)
        say(f"  ;; NAPTR {exchange.name} over {exchange.transport.upper()}: {rcode}")
        for line in exchange.lines():
            say(f"  {line}")
    regexp = sip_directive(ALICE_URI).regexp
    both = outcome.udp.routes_only_to(ALICE_URI) and outcome.tcp.routes_only_to(ALICE_URI)
    say(
        f"  one rule, flag \"u\", service E2U+sip, regexp {regexp} (alice's, not mallory's): "
        f"{'yes' if both else 'NO'}"
    )
    missing = outcome.unknown
    negative = "with the zone's SOA" if missing.nxdomain_with_soa else "(not a proper NXDOMAIN)"
    say(
        f"  ;; NAPTR {missing.name} ({UNKNOWN_NUMBER}, claimed by nobody): "
        f"{dns.rcode.to_text(missing.rcode)} {negative}"
    )
    return outcome.passed


async def supernode_step(supernode_dht: DhtNode, client: DhtNode, names: dict[int, str]) -> bool:
    """Step 7: reachability -> relay role -> found in the DHT -> credentials -> TURN."""
    server, user = names[id(supernode_dht)], names[id(client)]
    say()
    say(
        f"[7/{STEPS}] supernode: {STUN_SERVERS} STUN servers dial {server} back; "
        f"{server}'s controller takes the relay role"
    )
    say(f"      once the verdict holds, and {user} relays a datagram through it")
    async with SupernodeDemo.running(supernode_dht, client) as demo:
        say(f"  STUN servers with dial-back: {', '.join(f'{h}:{p}' for h, p in demo.stun)}")
        say(f"  {server} prints, as `p2pnode run` does:")
        status = demo.status()
        say(f"    {status.describe()}")
        for _ in range(demo.max_rounds):
            status = await demo.check_reachability()
            say(f"    {status.describe()}")
            if status.role is Role.SUPERNODE:
                break
        if status.role is not Role.SUPERNODE:
            say(f"  {server} was not promoted after {demo.max_rounds} rounds of checks")
            return False
        say(f"  {server}'s signed relay advert is stored on {demo.advert_stored} nodes")
        found = await demo.find_relay()
        advert = found.candidate.advert
        host, port = advert.udp[0]
        rtt = f"{found.rtt * 1000:.1f} ms" if found.rtt is not None else "no answer"
        say(
            f"  {user} finds it in the DHT and health-checks it over STUN: relays: "
            f"{host}:{port} ({rtt}, load {advert.load}/{advert.capacity})"
        )
        relayed = await demo.relay_datagram(found, PAYLOAD)
        credentials = relayed.credentials
        hours = (credentials.expires_at - time.time()) / 3600
        mine = "its" if credentials.peer_id == client.identity.peer_id else "ANOTHER"
        say(
            f"  {user} asks {server} for TURN credentials over the DHT: for {mine} peer id, "
            f"valid {hours:.0f} h, password sealed to a one-time key"
        )
        echo_host, echo_port = demo.echo_address
        relay_host, relay_port = relayed.relayed
        say(
            f"  {user} allocates {relay_host}:{relay_port} on the relay (aioice's TURN client, "
            f"UDP) and sends {PAYLOAD.decode()!r}"
        )
        through = relayed.echo_saw == relayed.relayed
        say(
            f"  to an echo peer at {echo_host}:{echo_port}, which saw it come from the relayed "
            f"address: {'yes' if through else 'NO'}; the echo came back: "
            f"{'yes' if relayed.echoed else 'NO'} ({relayed.attempts} sent)"
        )
        if relayed.error is not None:
            say(f"  the TURN client reported: {relayed.error}")
        during = relayed.during
        say(
            f"  relay counters: {during.allocations} allocation, {during.packets_to_peer} "
            f"datagram(s) to peers, {during.packets_to_client} to clients; released when "
            f"{user} closed it: {'yes' if relayed.released else 'NO'}"
        )
        return (
            demo.advert_stored >= 1
            and found.rtt is not None
            and credentials.peer_id == client.identity.peer_id
            and through
            and relayed.echoed
            and during.allocations == 1
            and relayed.released
        )


def lab_steps(labels: tuple[str, str, str, str], lab: bool) -> list[bool]:
    """Steps 8-11 behind NATs in the netns lab when ``lab`` (empty: run them on loopback,
    also when the lab cannot be built, said in one line)."""
    if lab:
        try:
            return run_lab_peer_steps(say, labels)  # p2pnode/demo/natlab.py
        except LabError as error:
            say(f"{labels[0]} NAT LAB COULD NOT BE BUILT ({error}); the peers run on loopback")
    return []


async def run_demo(count: int, lookups_per_node: int, seed: int, *, lab: bool = False) -> int:
    """Every step; ``lab``: steps 8-11 with real `p2pnode run` peers behind NATs (root)."""
    rng = random.Random(seed)
    say(f"p2pnode demo: {count} DHT nodes on 127.0.0.1 in one process, real UDP")
    if lab:
        say("      steps 8-11: peers behind NATs in a network-namespace lab (alice behind a")
        say(
            "      port-restricted NAT, bob behind a symmetric one, two public supernodes, a phone)"
        )
    say()
    started = time.perf_counter()
    nodes = await start_network(count)
    names = {id(node): name_of(i) for i, node in enumerate(nodes)}
    mallory = DhtNode(Identity.generate(), bootstrap=[nodes[0].address], client_mode=True)
    names[id(mallory)] = "mallory"
    passed: list[bool] = []
    try:
        await mallory.start()
        sizes = [len(node.core.table) for node in nodes]
        say(
            f"[1/{STEPS}] {count} nodes up in {(time.perf_counter() - started) * 1000:.0f} ms; "
            f"each has an Ed25519 key, node id = BLAKE2b-160(key); routing tables hold "
            f"{min(sizes)}-{max(sizes)} verified contacts"
        )
        records, found_all = await publish_and_look_up(nodes, names, lookups_per_node, rng)
        passed.append(found_all)
        passed.append(await attacks(nodes, mallory, records))
        verifier = Identity.generate()
        passed.append(await step(directory_step(nodes, mallory, verifier, names)))
        passed.append(await step(dns_step(nodes[0].address, verifier)))
        passed.append(await step(supernode_step(nodes[1 % count], nodes[0], names)))
        labels = (f"[8/{STEPS}]", f"[9/{STEPS}] offline messages:", f"[10/{STEPS}] a call:")
        phone_label = f"[11/{STEPS}] a phone on the gateway calls a peer behind a NAT, and back:"
        in_lab = lab_steps((*labels, phone_label), lab)
        if in_lab:  # the lab's phone was step 11; the gateway's own phones come last
            passed.extend(in_lab)
            passed.append(await step(run_sip_step(say, f"[12/{STEPS}] phones:")))
        else:
            passed.extend(await run_peer_steps(say, labels))  # p2pnode/demo/peers.py
            passed.append(await step(run_sip_step(say, f"[11/{STEPS}] phones:")))  # demo/sip.py
            passed.append(await step(run_bridge_step(say, f"[12/{STEPS}] a phone calls a peer:")))
    finally:
        await mallory.close()
        for node in nodes:
            await node.close()
    ok = all(passed)
    say()
    elapsed = time.perf_counter() - started
    say(f"demo {'passed' if ok else 'FAILED'} in {elapsed:.1f} s")
    return 0 if ok else 1

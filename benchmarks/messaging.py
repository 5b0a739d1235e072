"""Messaging figures on loopback: ratchet ops/s, mailbox deposits/s, catch-up, online latency.

Each figure has its floor or anchor measured in the same run:
- ratchet encrypt+decrypt per second (ours: X3DH sessions, ChaCha20-Poly1305) vs
  the bare ChaCha20-Poly1305 seal+open of the same 160-byte text (the floor);
- mailbox deposits per second, one ``MailboxCore`` on SQLite (WAL, NORMAL), one
  signed single-envelope request per deposit and 64-envelope batches, vs a bare
  SQLite insert+commit per row with the same pragmas (the floor);
- catch-up: seconds from ``attach`` until 1,000 queued messages (three real
  mailbox servers on loopback TCP) are all shown at the recipient;
- online delivery latency (send -> shown) over the real sealed signalling (two
  homes, UDP on loopback; floor: a bare signal through the same homes, one way)
  and over a direct loopback TCP link (floor: its echo RTT); a delivery also pays
  two ``synchronous=FULL`` commits (sender's outbox, recipient's store), measured.

    flock /tmp/bench.lock .venv/bin/python benchmarks/messaging.py [--quick]

Figures are indicative on a shared 2-core machine. LAST line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from benchmarks._common import percentile, print_final_json, print_table, ratio
from p2pnode.connectivity.attach import HomeConfig
from p2pnode.connectivity.contact import HomeEntry
from p2pnode.connectivity.homes import PeerConfig
from p2pnode.connectivity.resolve import contact_homes, fetch_contact
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.dht import DhtConfig, DhtNode
from p2pnode.identity import Identity
from p2pnode.sessions.chat_message import Envelope, encode_envelope
from p2pnode.sessions.chat_signal import chat_envelope, online_sender
from p2pnode.sessions.crypto import KeyAgreement, PrekeyBundle, RatchetHeader, RatchetSession
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MailboxEntry, mailbox_list_record
from p2pnode.sessions.mailbox_service import MailboxServer
from p2pnode.sessions.mailbox_wire import RegisterRequest, sign_deposit
from p2pnode.sessions.messaging import MessageShown, MessagingConfig, MessagingService
from p2pnode.sessions.outbox import RetryPolicy
from p2pnode.sessions.prekeys import bundle_from_record

TEXT = b"x" * 160


def ratchet_ops(count: int) -> tuple[float, float, float]:
    """(one-way pairs/s, ping-pong pairs/s with a DH step each, bare AEAD pairs/s)."""
    alice, bob = KeyAgreement.create(os.urandom(32)), KeyAgreement.create(os.urandom(32))
    session_a, init, header, ciphertext = RatchetSession.initiate(alice, bob.bundle(), b"hi")
    session_b, _ = RatchetSession.respond(bob, init, header, ciphertext)
    started = time.perf_counter()
    for _ in range(count):
        session_b.decrypt(*session_a.encrypt(TEXT))
    one_way = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for index in range(count):
        sender, receiver = (session_a, session_b) if index % 2 == 0 else (session_b, session_a)
        receiver.decrypt(*sender.encrypt(TEXT))
    ping_pong = count / (time.perf_counter() - started)
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = os.urandom(12)
    started = time.perf_counter()
    for _ in range(count):
        aead.decrypt(nonce, aead.encrypt(nonce, TEXT, b""), b"")
    bare = count / (time.perf_counter() - started)
    return one_way, ping_pong, bare


def deposits(count: int, directory: Path) -> tuple[float, float, float, float]:
    """(single deposits/s, batched deposits/s, bare SQLite inserts/s, ms per FULL commit)."""
    mailbox_id = Identity.generate()
    alice, bob = Identity.generate(), Identity.generate()
    entries = (MailboxEntry(mailbox_id.public_key, "127.0.0.1", 1),)
    now = time.time()
    envelopes = [
        encode_envelope(
            Envelope(
                alice.public_key,
                bob.public_key,
                None,
                RatchetHeader(os.urandom(32), 0, i),
                os.urandom(len(TEXT) + 40),
            )
        )
        for i in range(count)
    ]
    figures = []
    for batch in (1, 64):
        core = MailboxCore(mailbox_id.public_key, directory / f"deposit{batch}.db")
        record = mailbox_list_record(bob, entries, seq=1, now=now)
        core.handle(RegisterRequest(1, record.encoded), now)
        requests = [
            sign_deposit(
                alice,
                mailbox_id.public_key,
                i,
                bob.public_key,
                tuple(envelopes[i : i + batch]),
                int(now),
            )
            for i in range(0, count, batch)
        ]
        started = time.perf_counter()
        for request in requests:
            response = core.handle(request, now)
            assert all(s.stored for s in response.statuses)
        figures.append(count / (time.perf_counter() - started))
        core.close()
    db = sqlite3.connect(str(directory / "bare.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB)")
    started = time.perf_counter()
    for index, envelope in enumerate(envelopes):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", (index.to_bytes(8, "big"), envelope))
        db.execute("COMMIT")
    figures.append(count / (time.perf_counter() - started))
    db.execute("PRAGMA synchronous=FULL")  # what the peer's store pays per commit
    started = time.perf_counter()
    for index in range(200):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", ((count + index).to_bytes(8, "big"), b""))
        db.execute("COMMIT")
    figures.append((time.perf_counter() - started) / 200 * 1000)
    db.close()
    return figures[0], figures[1], figures[2], figures[3]


async def _signal_server(deliver: MessagingService) -> tuple[asyncio.Server, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                payload = await reader.readexactly(length)
                if payload == b"ping":
                    writer.write(struct.pack(">I", 4) + b"pong")
                    await writer.drain()
                    continue
                await deliver.deliver_online(payload)
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def messaging(queued: int, online: int, directory: Path) -> dict[str, float | None]:
    keys = [Identity.generate() for _ in range(3)]
    servers = []
    for index, key in enumerate(keys):
        server = MailboxServer(MailboxCore(key.public_key, directory / f"box{index}.db"), time.time)
        await server.start("127.0.0.1", 0)
        servers.append(server)
    entries = tuple(
        MailboxEntry(k.public_key, "127.0.0.1", s.address[1])
        for k, s in zip(keys, servers, strict=True)
    )
    bundles: dict[bytes, PrekeyBundle] = {}
    shown_at: dict[str, float] = {}
    arrived = asyncio.Event()
    links: dict[bytes, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def send_signal(peer: bytes, payload: bytes) -> bool:
        link = links.get(peer)
        if link is None:
            return False
        link[1].write(struct.pack(">I", len(payload)) + payload)
        await link[1].drain()
        return True

    async def resolve_bundle(peer: bytes) -> PrekeyBundle | None:
        return bundles.get(peer)

    async def resolve_mailboxes(peer: bytes) -> tuple[MailboxEntry, ...]:
        return entries

    def make(name: str) -> MessagingService:
        seed = os.urandom(32)

        def on_event(event: object) -> None:
            if isinstance(event, MessageShown):
                shown_at[event.message.text] = time.perf_counter()
                arrived.set()

        return MessagingService(
            Identity.generate(seed),
            seed,
            directory / f"{name}.db",
            MessagingConfig(
                entries, policy=RetryPolicy(held=600.0), drain_every=3600, idle_wake=1.0
            ),
            send_signal=send_signal,
            resolve_bundle=resolve_bundle,
            resolve_mailboxes=resolve_mailboxes,
            clock=time.time,
            rng=random.Random(name),
            on_event=on_event,
        )

    alice, bob = make("alice"), make("bob")
    bob_key = bob.identity.public_key
    bundles[bob_key] = bundle_from_record(bob.core.prekey_record(time.time()))
    await bob.register()
    await alice.register()
    pump = asyncio.create_task(alice.run())
    for index in range(queued):
        await alice.send(bob_key, f"queued {index}")
    for _ in range(1200):  # at most 60 s
        if alice.statistics().deposited >= queued:
            break
        await asyncio.sleep(0.05)
    started = time.perf_counter()
    await bob.attach()
    catchup = max(shown_at.values()) - started if len(shown_at) >= queued else None

    server, port = await _signal_server(bob)
    alice_server, alice_port = await _signal_server(alice)  # receipts come back online too
    links[bob_key] = await asyncio.open_connection("127.0.0.1", port)
    links[alice.identity.public_key] = await asyncio.open_connection("127.0.0.1", alice_port)
    bob_pump = asyncio.create_task(bob.run())
    reader, writer = links[bob_key]
    rtts = []
    for _ in range(online):
        began = time.perf_counter()
        writer.write(struct.pack(">I", 4) + b"ping")
        await writer.drain()
        await reader.readexactly(8)
        rtts.append((time.perf_counter() - began) * 1000)
    latencies = []
    for index in range(online):
        text = f"online {index}"
        began = time.perf_counter()
        arrived.clear()
        await alice.send(bob_key, text)
        await asyncio.wait_for(arrived.wait(), 30)
        latencies.append((shown_at[text] - began) * 1000)
    await alice.drain()  # the receipts of the queued messages wait in alice's mailboxes
    outbox_after = alice.statistics().outbox
    for task in (pump, bob_pump):
        task.cancel()
    await asyncio.gather(pump, bob_pump, return_exceptions=True)
    for _, link_writer in links.values():
        link_writer.close()
    server.close()
    alice_server.close()
    for service in (alice, bob):
        await service.close()
    for mailbox in servers:
        await mailbox.close()
    return {
        "catchup_s": catchup,
        "online_p50_ms": percentile(latencies, 50),
        "online_p95_ms": percentile(latencies, 95),
        "rtt_ms": percentile(rtts, 50),
        "outbox_after": float(outbox_after),
    }


async def _wait(condition: object, limit: float = 20.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polled state
            await asyncio.sleep(0.02)


async def sealed_signalling(count: int, directory: Path) -> dict[str, float | None]:
    """send -> shown over the real sealed signalling (two homes on loopback, UDP).

    Floor: the same homes relaying a bare signal (send_signal -> receive) in this run.
    """
    loopback = DhtConfig().sharing_ip(16)
    dhts: list[DhtNode] = []
    services: list[SignallingService] = []
    home_config = HomeConfig(grace=1.0, min_keepalive=0.5)
    for _ in range(2):
        bootstrap = [dhts[0].address] if dhts else []
        dht = DhtNode(Identity.generate(), bootstrap=bootstrap, config=loopback)
        await dht.start()
        dhts.append(dht)
        home = SignallingService(dht.identity, dht, public=True, home_config=home_config)
        await home.start()
        services.append(home)
    keys = [home.identity.public_key for home in services]
    for home in services:

        async def listed(home: SignallingService = home) -> bool:
            contact = await fetch_contact(dhts[-1], home.identity.public_key)
            return contact is not None

        for _ in range(200):
            if await listed():
                break
            await asyncio.sleep(0.05)
    peers: list[tuple[SignallingService, MessagingService]] = []
    shown_at: dict[str, float] = {}
    arrived = asyncio.Event()
    bundles: dict[bytes, PrekeyBundle] = {}

    async def resolve_bundle(peer: bytes) -> PrekeyBundle | None:
        return bundles.get(peer)

    async def no_mailboxes(peer: bytes) -> tuple[MailboxEntry, ...]:
        return ()

    def on_event(event: object) -> None:
        if isinstance(event, MessageShown):
            shown_at[event.message.text] = time.perf_counter()
            arrived.set()

    for name in ("alice", "bob"):
        seed = os.urandom(32)
        identity = Identity.generate(seed)
        dht = DhtNode(identity, bootstrap=[dhts[0].address], config=loopback, client_mode=True)
        await dht.start()
        dhts.append(dht)

        async def find_homes(dht: DhtNode = dht) -> list[HomeEntry]:
            return await contact_homes(dht, keys)

        signal = SignallingService(
            identity, dht, find_homes=find_homes, peer_config=PeerConfig(keepalive=1.0)
        )
        await signal.start()
        services.append(signal)
        await _wait(lambda signal=signal: len(signal.homes()) == 2)
        for _ in range(200):
            contact = await fetch_contact(dht, identity.public_key)
            if contact is not None and set(contact.homes) == set(signal.homes()):
                break
            await asyncio.sleep(0.05)
        service = MessagingService(
            identity,
            seed,
            directory / f"signal-{name}.db",
            # a receipt lost under load is recovered by the sender's retry 2 s later
            MessagingConfig((), policy=RetryPolicy(online=2.0), drain_every=3600),
            send_signal=online_sender(signal),
            resolve_bundle=resolve_bundle,
            resolve_mailboxes=no_mailboxes,
            clock=time.time,
            on_event=on_event,
        )
        peers.append((signal, service))
    (alice_signal, alice), (bob_signal, bob) = peers
    bob_key = bob.identity.public_key
    bundles[bob_key] = bundle_from_record(bob.core.prekey_record(time.time()))
    floors: list[float] = []
    latencies: list[float] = []

    async def inbox(signal: SignallingService, service: MessagingService) -> None:
        while True:
            delivery = await signal.receive()
            if delivery.payload == b"floor":
                floors.append(time.perf_counter())
                continue
            envelope = chat_envelope(delivery)
            if envelope is not None:
                await service.deliver_online(envelope)

    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(inbox(alice_signal, alice)),
            group.create_task(inbox(bob_signal, bob)),
            group.create_task(alice.run()),
            group.create_task(bob.run()),
        ]
        rtts: list[float] = []
        for _ in range(count):
            began = time.perf_counter()
            before = len(floors)
            await alice_signal.send_signal(bob_key, b"floor")
            try:
                await _wait(lambda before=before: len(floors) > before, 2.0)
            except TimeoutError:
                continue  # lost on a loaded box: no sample
            rtts.append((floors[-1] - began) * 1000)
        for index in range(count):
            text = f"signal {index}"
            arrived.clear()
            began = time.perf_counter()
            await alice.send(bob_key, text)
            await asyncio.wait_for(arrived.wait(), 20)
            latencies.append((shown_at[text] - began) * 1000)
        await _wait(lambda: alice.statistics().outbox == 0, 120)
        for task in tasks:
            task.cancel()
    for service in (alice, bob):
        await service.close()
    for signal in reversed(services):
        await signal.stop()
    for dht in dhts:
        await dht.close()
    return {
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "floor_p50": percentile(rtts, 50),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    arguments = parser.parse_args()
    ops = 300 if arguments.quick else 3000
    count = 500 if arguments.quick else 5000
    queued = 100 if arguments.quick else 1000
    online = 20 if arguments.quick else 200
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        one_way, ping_pong, bare_aead = ratchet_ops(ops)
        single, batched, bare_sqlite, fsync_ms = deposits(count, directory)
        flows = asyncio.run(messaging(queued, online, directory))
        sealed = asyncio.run(sealed_signalling(online, directory))
    print_table(
        ["figure", "ours", "floor/anchor", "ratio"],
        [
            ["ratchet enc+dec /s (one way)", one_way, bare_aead, ratio(one_way, bare_aead)],
            [
                "ratchet enc+dec /s (DH step each)",
                ping_pong,
                bare_aead,
                ratio(ping_pong, bare_aead),
            ],
            ["deposits /s (1 per request)", single, bare_sqlite, ratio(single, bare_sqlite)],
            ["deposits /s (64 per request)", batched, bare_sqlite, ratio(batched, bare_sqlite)],
            [
                f"catch-up {queued} queued (s)",
                flows["catchup_s"],
                2.0,
                ratio(flows["catchup_s"], 2.0),
            ],
            ["FULL commit (ms), 2 per delivery", fsync_ms, None, None],
            ["online direct TCP p50 (ms)", flows["online_p50_ms"], flows["rtt_ms"], None],
            ["online direct TCP p95 (ms)", flows["online_p95_ms"], flows["rtt_ms"], None],
            ["online sealed signalling p50 (ms)", sealed["p50"], sealed["floor_p50"], None],
            ["online sealed signalling p95 (ms)", sealed["p95"], sealed["floor_p50"], None],
            ["outbox after online run", flows["outbox_after"], 0, None],
        ],
    )
    print_final_json(
        {
            "online_p50_ms": sealed["p50"],
            "online_p95_ms": sealed["p95"],
            "rtt_ms": sealed["floor_p50"],
            "online_direct_p50_ms": flows["online_p50_ms"],
            "online_direct_p95_ms": flows["online_p95_ms"],
            "direct_rtt_ms": flows["rtt_ms"],
            "catchup_1000_s" if queued == 1000 else f"catchup_{queued}_s": flows["catchup_s"],
            "deposits_per_s": single,
            "deposits_batched_per_s": batched,
            "sqlite_commits_per_s": bare_sqlite,
            "full_commit_ms": fsync_ms,
            "outbox_after_online": flows["outbox_after"],
            "ratchet_ops_per_s": one_way,
            "ratchet_dh_ops_per_s": ping_pong,
            "aead_ops_per_s": bare_aead,
        }
    )


if __name__ == "__main__":
    main()

"""Loopback: alice online, bob offline, three mailbox servers on real TCP sockets (port 0).

Alice sends 200 messages; one mailbox is stopped midway and restarted on its
database later; alice's service is killed mid-send (tasks cancelled, store
dropped without closing) and restarted from its home. Bob attaches: every
message is shown exactly once and in order, alice's outbox empties once the
receipts arrive, and no mailbox holds any of them afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2pnode.identity import Identity
from p2pnode.sessions.chat_message import Envelope, decode_envelope, encode_envelope
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox import MailboxCore, MailboxLimits
from p2pnode.sessions.mailbox_list import MailboxEntry
from p2pnode.sessions.mailbox_service import MailboxServer
from p2pnode.sessions.messaging import (
    MessageShown,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
)
from p2pnode.sessions.outbox import RetryPolicy
from p2pnode.sessions.prekeys import bundle_from_record

POLICY = RetryPolicy(first=0.05, ceiling=0.4, held=30.0, online=2.0)


def run(coroutine: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), 120))


class World:
    """Mailboxes, a directory (bundles, mailbox lists) and the online path, all on loopback."""

    def __init__(self, tmp: Path, limits: MailboxLimits | None = None) -> None:
        self.tmp = tmp
        self.limits = limits
        self.keys = [Identity.generate(bytes([50 + i]) * 32) for i in range(3)]
        self.servers: list[MailboxServer | None] = [None, None, None]
        self.ports = [0, 0, 0]
        self.bundles: dict[bytes, PrekeyBundle] = {}
        self.online: dict[bytes, MessagingService] = {}
        self.shown: dict[bytes, list[str]] = {}

    async def start_mailbox(self, index: int) -> None:
        core = MailboxCore(
            self.keys[index].public_key, self.tmp / f"mailbox{index}.db", self.limits
        )
        server = MailboxServer(core, time.time)
        await server.start("127.0.0.1", self.ports[index])
        self.ports[index] = server.address[1]
        self.servers[index] = server

    async def stop_mailbox(self, index: int) -> None:
        server = self.servers[index]
        assert server is not None
        await server.close()
        server.core.close()
        self.servers[index] = None

    def entries(self) -> tuple[MailboxEntry, ...]:
        return tuple(
            MailboxEntry(key.public_key, "127.0.0.1", port)
            for key, port in zip(self.keys, self.ports, strict=True)
        )

    async def send_signal(self, peer: bytes, payload: bytes) -> bool:
        service = self.online.get(peer)
        if service is None:
            return False
        await service.deliver_online(payload)
        return True

    async def resolve_bundle(self, peer: bytes) -> PrekeyBundle | None:
        return self.bundles.get(peer)

    async def resolve_mailboxes(self, peer: bytes) -> tuple[MailboxEntry, ...]:
        return self.entries()

    def service(self, seed: bytes, name: str) -> MessagingService:
        identity = Identity.generate(seed)
        shown = self.shown.setdefault(identity.public_key, [])

        def on_event(event: MessagingEvent) -> None:
            if isinstance(event, MessageShown):
                shown.append(event.message.text)

        return MessagingService(
            identity,
            seed,
            self.tmp / f"{name}.db",
            MessagingConfig(self.entries(), policy=POLICY, drain_every=0.3, idle_wake=0.2),
            send_signal=self.send_signal,
            resolve_bundle=self.resolve_bundle,
            resolve_mailboxes=self.resolve_mailboxes,
            clock=time.time,
            on_event=on_event,
        )

    def held_for(self, peer: bytes) -> int:
        return sum(s.core.held_for(peer) for s in self.servers if s is not None)


async def wait_until(condition: Callable[[], bool], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


ALICE, BOB = bytes([21]) * 32, bytes([22]) * 32


async def bob_publishes_then_leaves(world: World) -> bytes:
    bob = world.service(BOB, "bob")
    world.bundles[bob.identity.public_key] = bundle_from_record(bob.core.prekey_record(time.time()))
    await bob.register()
    await bob.close()
    return bob.identity.public_key


def test_two_hundred_messages_through_crashes(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path)
        for index in range(3):
            await world.start_mailbox(index)
        bob_key = await bob_publishes_then_leaves(world)
        texts = [f"message {i}" for i in range(200)]

        alice = world.service(ALICE, "alice")
        world.online[alice.identity.public_key] = alice
        task = asyncio.create_task(alice.run())
        for text in texts[:70]:
            await alice.send(bob_key, text)
        await world.stop_mailbox(1)  # a mailbox supernode dies midway
        for text in texts[70:120]:
            await alice.send(bob_key, text)
        await asyncio.sleep(0.1)
        # alice's process dies mid-send: tasks gone, store not closed, nothing flushed by us
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        del world.online[alice.identity.public_key]
        alice = world.service(ALICE, "alice")  # restarted from its home
        world.online[alice.identity.public_key] = alice
        task = asyncio.create_task(alice.run())
        for text in texts[120:]:
            await alice.send(bob_key, text)
        await world.start_mailbox(1)  # the dead mailbox comes back on its database
        await wait_until(lambda: alice.statistics().deposited >= 1)
        await asyncio.sleep(0.5)

        bob = world.service(BOB, "bob")
        world.online[bob_key] = bob
        await bob.attach()
        shown = world.shown[bob_key]
        await wait_until(lambda: len(shown) >= 200)
        await wait_until(lambda: alice.statistics().outbox == 0)
        await bob.drain()  # copies deposited before the receipts: duplicates, not shown
        assert shown == texts  # all 200 exactly once, in order
        # a replayed envelope and a forged one (mallory writes as alice) are refused
        replayed = alice.core.store.due_outbox(float("inf"))
        assert replayed == []  # receipted: nothing left to replay from the outbox
        mallory = world.service(bytes([23]) * 32, "mallory")
        world.bundles[bob_key] = bundle_from_record(bob.core.prekey_record(time.time()))
        forged = mallory.core.compose(bob_key, "I am alice", time.time(), world.bundles[bob_key])
        envelope = decode_envelope(forged.envelope)
        claimed = encode_envelope(
            Envelope(alice.identity.public_key, bob_key, None, envelope.header, envelope.ciphertext)
        )
        await bob.deliver_online(claimed)
        assert bob.statistics().refused == 1
        assert bob.refused_by_reason == {"tampered": 1}
        before = len(shown)
        await bob.deliver_online(forged.envelope)  # mallory as mallory: a message request
        await bob.deliver_online(forged.envelope)  # the same envelope again: a duplicate
        assert shown[before:] == ["I am alice"] and len(shown) == before + 1
        assert world.held_for(bob_key) == 0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for service in (alice, bob, mallory):
            await service.close()
        for index in range(3):
            await world.stop_mailbox(index)

    run(scenario)


def test_full_mailboxes_refuse_with_their_code_and_the_message_arrives_later(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        world = World(tmp_path, MailboxLimits(recipient_count=10))
        for index in range(3):
            await world.start_mailbox(index)
        bob_key = await bob_publishes_then_leaves(world)
        alice = world.service(ALICE, "alice")
        world.online[alice.identity.public_key] = alice
        task = asyncio.create_task(alice.run())
        texts = [f"m{i}" for i in range(15)]
        for text in texts:
            await alice.send(bob_key, text)
        await wait_until(lambda: alice.statistics().deposit_refusals >= 15)
        refused = [s.core.refused for s in world.servers if s is not None]
        assert refused and all(count >= 5 for count in refused)
        assert world.held_for(bob_key) == 30  # 10 per mailbox, the rest refused
        bob = world.service(BOB, "bob")
        await bob.attach()  # bob drains but is not reachable online: receipts go by mailbox
        shown = world.shown[bob_key]
        assert shown == texts[:10]
        poll = asyncio.create_task(bob.run())
        await wait_until(lambda: len(shown) == 15)
        assert shown == texts
        await wait_until(lambda: alice.statistics().outbox == 0, 30)
        for running in (task, poll):
            running.cancel()
        await asyncio.gather(task, poll, return_exceptions=True)
        for service in (alice, bob):
            await service.close()
        for index in range(3):
            await world.stop_mailbox(index)

    run(scenario)

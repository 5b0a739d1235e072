"""The replacement timer in the service's run loop, in virtual time: a mailbox failing
for ``GONE_AFTER`` is replaced by a candidate, the new list is registered, published
and announced (``MailboxesChanged``), the old one kept as a former mailbox; a peer
short of mailboxes fills up to three from what ``find_mailboxes`` offers.

The clock is a variable the test moves; ``republish_every`` is tiny, so the loop
wakes often (short real sleeps) and acts whenever the virtual clock has moved.
Mailboxes are in-process servers on loopback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from p2pnode.identity import Identity
from p2pnode.records.codec import SignedRecord
from p2pnode.records.kinds import RecordKind
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_choice import FORMER_KEPT, GONE_AFTER
from p2pnode.sessions.mailbox_list import MailboxEntry, mailboxes_from_record
from p2pnode.sessions.mailbox_service import MailboxServer
from p2pnode.sessions.messaging import (
    MailboxesChanged,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
)

T0 = 1_700_000_000.0
WAIT = 10.0


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def mailboxes(
    root: Path, clock: Callable[[], float], count: int
) -> AsyncIterator[list[MailboxEntry]]:
    servers = []
    entries = []
    for index in range(count):
        key = Identity.generate(bytes([90 + index]) * 32).public_key
        server = MailboxServer(MailboxCore(key, root / f"box{index}.db"), clock)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        entries.append(MailboxEntry(key, "127.0.0.1", server.address[1]))
    try:
        yield entries
    finally:
        for server in servers:
            await server.close()


class World:
    def __init__(self, candidates: tuple[MailboxEntry, ...]) -> None:
        self.now = T0
        self.candidates = candidates
        self.published: list[SignedRecord] = []
        self.events: list[MessagingEvent] = []
        self.searches = 0

    def clock(self) -> float:
        return self.now

    async def find(self) -> tuple[MailboxEntry, ...]:
        self.searches += 1
        return self.candidates

    async def publish(self, record: SignedRecord) -> None:
        self.published.append(record)

    def lists(self) -> list[tuple[MailboxEntry, ...]]:
        return [
            mailboxes_from_record(r) for r in self.published if r.kind is RecordKind.MAILBOX_LIST
        ]

    def service(self, root: Path, config: MessagingConfig) -> MessagingService:
        async def offline(peer: bytes, payload: bytes) -> bool:
            return False

        async def no_bundle(peer: bytes) -> PrekeyBundle | None:
            return None

        async def no_mailboxes(peer: bytes) -> tuple[MailboxEntry, ...]:
            return ()

        seed = bytes([77]) * 32
        return MessagingService(
            Identity.generate(seed),
            seed,
            root / "bob.db",
            config,
            send_signal=offline,
            resolve_bundle=no_bundle,
            resolve_mailboxes=no_mailboxes,
            clock=self.clock,
            on_event=self.events.append,
            publish=self.publish,
            find_mailboxes=self.find,
        )


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - the loop under test runs beside us
            await asyncio.sleep(0.01)


def test_gone_for_a_day_is_replaced_by_the_run_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(())
        async with mailboxes(tmp_path, world.clock, 3) as live:
            dead = MailboxEntry(bytes([9]) * 32, "127.0.0.1", closed_port())
            current = (live[0], dead, live[1])
            world.candidates = (*current, live[2])
            config = MessagingConfig(current, republish_every=0.02, drain_every=3600.0)
            bob = world.service(tmp_path, config)
            await bob.drain()  # the dead one fails from T0 on
            loop = asyncio.create_task(bob.run())
            try:
                await until(lambda: len(world.lists()) == 1)  # published at start
                world.now = T0 + GONE_AFTER - 1  # nearly a day: republished, still kept
                await until(lambda: len(world.lists()) == 2)
                assert world.lists() == [current, current] and not world.events
                assert world.searches == 0  # three named, none gone: nothing to search for
                world.now = T0 + GONE_AFTER + 1
                await until(lambda: bool(world.events))
                await until(lambda: world.lists()[-1] == (live[0], live[1], live[2]))
            finally:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
            assert bob.mailboxes == (live[0], live[1], live[2]) and world.searches >= 1
            assert world.events == [
                MailboxesChanged(bob.mailboxes, ((dead, T0 + GONE_AFTER + 1 + FORMER_KEPT),))
            ]
            assert bob.former_mailboxes == ((dead, T0 + GONE_AFTER + 1 + FORMER_KEPT),)
            await bob.close()

    asyncio.run(scenario())


def test_short_of_mailboxes_fills_to_three_as_candidates_appear(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(())
        async with mailboxes(tmp_path, world.clock, 4) as live:
            pinned = (live[3],)
            config = MessagingConfig(pinned, pinned=pinned, republish_every=3600.0)
            bob = world.service(tmp_path, config)
            loop = asyncio.create_task(bob.run())
            try:
                await until(lambda: len(world.lists()) == 1)  # the pinned one, published
                world.candidates = (live[0],)  # the search finds one: the list grows
                await until(lambda: len(bob.mailboxes) == 2)
                world.candidates = tuple(live[:3])
                await until(lambda: len(bob.mailboxes) == 3)
                await until(lambda: len(world.lists()) == 3)
            finally:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
            assert bob.mailboxes[:2] == (live[3], live[0])
            assert world.lists()[-1] == bob.mailboxes
            assert [e.mailboxes for e in world.events if isinstance(e, MailboxesChanged)] == [
                bob.mailboxes[:2],
                bob.mailboxes,
            ]
            for entry in bob.mailboxes:  # each new one took our registration
                assert not bob._health[entry.key].failing_since
            await bob.close()

    asyncio.run(scenario())

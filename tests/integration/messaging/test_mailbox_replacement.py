"""A mailbox gone for a day is replaced; the new list reaches senders; the old one is drained.

Four mailbox servers on loopback, bob names three. One stops; bob's drains
fail; a day later (a shifted clock shared by everyone) bob replaces it with the
fourth, registers there and publishes the new list; alice, resolving the
published list, deposits where bob now looks, and bob reads it. When the old
mailbox comes back it is still drained as a former one.

Re-binding the old port IS the behaviour under test: a former mailbox is drained
at the address bob saved for it (``MessagingService.drain`` walks its former
entries; no lookup finds it elsewhere), so only a server restarting at its address
can show it. Every server is first bound on port 0 (``start_mailboxes``); the
restart takes the port the kernel gave mailbox 1, which is why it is not fixed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from p2pnode.identity import Identity
from p2pnode.sessions.mailbox_choice import GONE_AFTER
from p2pnode.sessions.mailbox_list import MailboxEntry
from p2pnode.sessions.mailbox_service import MailboxServer
from p2pnode.sessions.messaging import MessagingConfig, MessagingService
from tests.integration.messaging.loopback_mailboxes import OfflineServices, start_mailboxes


async def deposit(alice: MessagingService, bob_key: bytes, text: str, total: int) -> None:
    """Alice sends ``text`` and runs her pump until ``total`` messages were deposited."""
    await alice.send(bob_key, text)
    pump = asyncio.create_task(alice.run())
    try:
        async with asyncio.timeout(20):
            while alice.statistics().deposited < total:  # noqa: ASYNC110 - polled counter
                await asyncio.sleep(0.02)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)


def test_gone_mailbox_replaced_and_senders_follow(tmp_path: Path) -> None:
    async def scenario() -> None:
        offset = [0.0]

        def clock() -> float:
            return time.time() + offset[0]

        keys = [Identity.generate(bytes([70 + i]) * 32) for i in range(4)]
        servers, entries = await start_mailboxes(tmp_path, keys, clock)
        services = OfflineServices(tmp_path, clock)
        board, shown = services.board, services.shown

        async def candidates() -> tuple[MailboxEntry, ...]:
            return entries

        def service(seed: bytes, name: str) -> MessagingService:
            config = MessagingConfig(entries[:3])
            return services.service(seed, name, config, find_mailboxes=candidates)

        alice, bob = service(bytes([31]) * 32, "alice"), service(bytes([32]) * 32, "bob")
        bob_key = bob.identity.public_key
        await bob.attach()
        await bob.publish_records()
        await alice.attach()
        await alice.publish_records()
        await deposit(alice, bob_key, "before", 1)
        assert servers[1].core.held_for(bob_key) == 1
        await servers[1].close()  # mailbox 1 disappears, holding a copy
        await bob.drain()  # its failure is noted; "before" comes from the other two
        assert not await bob.refresh_mailboxes()  # not yet gone: the list is kept
        offset[0] = GONE_AFTER + 1
        await bob.drain()
        assert await bob.refresh_mailboxes()
        assert bob.mailboxes == (entries[0], entries[2], entries[3])
        await bob.publish_records()
        assert await board.resolve_mailboxes(bob_key) == bob.mailboxes

        await deposit(alice, bob_key, "after the change", 2)
        # the new mailbox holds the new message (and "before" again: a day later alice's
        # held entry was due for its re-deposit, and its receipt still waits in her mailboxes)
        assert servers[3].core.held_for(bob_key) >= 1
        await bob.drain()
        assert shown == ["before", "after the change"]
        # the old mailbox comes back on its database at its address (a node restarting
        # where it was; the port came from port 0 above): still drained as a former one
        back = MailboxServer(servers[1].core, clock)
        await back.start("127.0.0.1", entries[1].port)
        assert servers[1].core.held_for(bob_key) == 1
        await bob.drain()
        assert servers[1].core.held_for(bob_key) == 0
        assert shown == ["before", "after the change"]  # its copy was a duplicate
        await back.close()
        for running in (alice, bob):
            await running.close()
        for server in servers:
            await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))

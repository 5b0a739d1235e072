"""Receipts follow the screen: a blocked peer's mailbox copies are never receipted, a
stranger's are delivered but not read until accepted. Loopback, three real mailboxes.

bob is offline; alice (whom bob blocked) and carol (a stranger to bob) each leave a
text in his mailboxes. bob attaches and drains: both copies are fetched, stored and
deleted from every mailbox (nothing is fetched again), carol's turns "delivered" at
carol's, alice's never does (bob's node made no receipt for it). bob's page marking
carol's text read sends nothing until bob accepts her; then carol sees "read". A
page marking alice's text read sends nothing either. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import cast

from p2pnode.app.peer_chat import ChatService
from p2pnode.app.peer_config import ChatSection
from p2pnode.app.services import DhtService
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.identity import Identity, peer_id_for
from p2pnode.sessions.messaging import (
    MessageShown,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
)
from tests.integration.messaging.test_offline_delivery import (
    ALICE,
    BOB,
    POLICY,
    World,
    bob_publishes_then_leaves,
    run,
    wait_until,
)

CAROL = bytes([24]) * 32


def test_blocked_copies_get_no_receipt_strangers_no_read_until_accepted(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path)
        for index in range(3):
            await world.start_mailbox(index)
        bob_key = await bob_publishes_then_leaves(world)
        alice, carol = world.service(ALICE, "alice"), world.service(CAROL, "carol")
        alice_id = alice.identity.peer_id
        carol_id = carol.identity.peer_id
        tasks = []
        for sender in (alice, carol):
            world.online[sender.identity.public_key] = sender
            tasks.append(asyncio.create_task(sender.run()))
        blocked_id = await alice.send(bob_key, "from alice, whom bob blocked")
        stranger_id = await carol.send(bob_key, "from carol, a stranger")
        await wait_until(lambda: alice.statistics().deposited == carol.statistics().deposited == 1)
        assert world.held_for(bob_key) >= 4  # at least two copies each

        shown: list[MessageShown] = []

        def on_event(event: MessagingEvent) -> None:
            if isinstance(event, MessageShown):
                shown.append(event)

        blocked = {alice_id}
        bob = MessagingService(
            Identity.generate(BOB),
            BOB,
            tmp_path / "bob.db",
            MessagingConfig(world.entries(), policy=POLICY, drain_every=0.3, idle_wake=0.2),
            send_signal=world.send_signal,
            resolve_bundle=world.resolve_bundle,
            resolve_mailboxes=world.resolve_mailboxes,
            clock=time.time,
            on_event=on_event,
            withhold_receipts=lambda peer: peer_id_for(peer) in blocked,
        )
        world.online[bob_key] = bob
        await bob.attach()  # drains all three mailboxes, receipts sent as it goes
        assert sorted(e.message.text for e in shown) == [
            "from alice, whom bob blocked",
            "from carol, a stranger",
        ]
        assert all(e.request for e in shown)  # neither was ever accepted by bob
        assert world.held_for(bob_key) == 0  # every copy deleted: never fetched again
        await wait_until(lambda: carol.status(stranger_id).delivered)
        assert not alice.status(blocked_id).delivered
        assert alice.status(blocked_id).queued  # her outbox still waits for a receipt
        assert bob.statistics().receipts_withheld >= 1
        assert await bob.drain() == 0

        # bob's node as the app runs it: reads screened like messages
        chat = ChatService(
            tmp_path / "bob-home",
            Identity.generate(BOB),
            cast(DhtService, None),
            cast(SignallingService, None),
            ChatSection.model_validate({"enabled": True}),
            emit=lambda event: None,
        )
        contacts: set[str] = set()
        chat.messaging = bob
        chat.blocked, chat.is_contact = blocked.__contains__, contacts.__contains__
        carol_text = next(e.message for e in shown if e.message.peer == carol.identity.public_key)
        alice_text = next(e.message for e in shown if e.message.peer == alice.identity.public_key)
        assert not await chat.read(carol.identity.public_key, (carol_text.message_id,))
        assert not await chat.read(alice.identity.public_key, (alice_text.message_id,))
        assert chat.reads_withheld == 2
        assert bob.core.unread() == {
            carol.identity.public_key: 1,
            alice.identity.public_key: 1,
        }  # nothing marked either
        contacts.add(carol_id)  # bob accepts carol
        assert await chat.read(carol.identity.public_key, (carol_text.message_id,))
        await wait_until(lambda: carol.status(stranger_id).read)
        assert not alice.status(blocked_id).read and not alice.status(blocked_id).delivered

        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for service in (alice, carol, bob):
            await service.close()
        for index in range(3):
            await world.stop_mailbox(index)

    run(scenario)

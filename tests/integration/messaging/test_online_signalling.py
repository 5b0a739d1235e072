"""The online path over the real sealed signalling on loopback: no mailbox involved.

Two public homes (DHT + signalling), alice and bob attached to both; the chat
envelopes and the delivered receipts travel as sealed envelopes through the
recipient's homes (``chat_signal``). Three mailbox servers run as the fallback
(a signal lost on a loaded machine is retried); alice's outbox empties once the
receipts are in. A chat payload whose
envelope claims another sender than the signal's authenticated one is refused.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from p2pnode.connectivity.contact import HomeEntry
from p2pnode.connectivity.signalling import SignallingService, contact_homes
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from p2pnode.sessions.chat_message import Envelope, encode_envelope
from p2pnode.sessions.chat_signal import (
    CHAT_SIGNAL_TAG,
    ChatSignalRefusedError,
    chat_envelope,
    online_sender,
)
from p2pnode.sessions.crypto import PrekeyBundle, RatchetHeader
from p2pnode.sessions.mailbox import MailboxCore
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
from tests.integration.connectivity.test_peerlink_signalling import (
    HOME,
    LOOPBACK,
    PEER,
    WAIT,
    published,
    until,
)

COUNT = 50


async def scenario(tmp: Path) -> None:
    dhts: list[DhtNode] = []
    signalling: list[SignallingService] = []
    boxes: list[MailboxServer] = []
    services: list[MessagingService] = []
    try:
        for _ in range(2):
            bootstrap = [dhts[0].address] if dhts else []
            dht = DhtNode(Identity.generate(), bootstrap=bootstrap, config=LOOPBACK)
            await dht.start()
            dhts.append(dht)
            home = SignallingService(dht.identity, dht, public=True, home_config=HOME)
            await home.start()
            signalling.append(home)
        for home in signalling:
            await published(dhts[-1], home.identity.public_key, (home.own_home,))
        home_keys = [home.identity.public_key for home in signalling]
        for index in range(3):
            box = MailboxServer(
                MailboxCore(Identity.generate().public_key, tmp / f"box{index}.db"), time.time
            )
            await box.start("127.0.0.1", 0)
            boxes.append(box)
        entries = tuple(MailboxEntry(b.core.own_key, "127.0.0.1", b.address[1]) for b in boxes)
        bundles: dict[bytes, PrekeyBundle] = {}
        shown: list[str] = []

        async def resolve_bundle(peer: bytes) -> PrekeyBundle | None:
            return bundles.get(peer)

        async def resolve_mailboxes(peer: bytes) -> tuple[MailboxEntry, ...]:
            return entries

        def on_event(event: MessagingEvent) -> None:
            if isinstance(event, MessageShown):
                shown.append(event.message.text)

        pairs: list[tuple[SignallingService, MessagingService]] = []
        for name in ("alice", "bob"):
            seed = bytes([len(name)]) * 32 if name == "bob" else bytes([9]) * 32
            identity = Identity.generate(seed)
            dht = DhtNode(identity, bootstrap=[dhts[0].address], config=LOOPBACK, client_mode=True)
            await dht.start()
            dhts.append(dht)

            async def find_homes(dht: DhtNode = dht) -> list[HomeEntry]:
                return await contact_homes(dht, home_keys)

            peer = SignallingService(identity, dht, find_homes=find_homes, peer_config=PEER)
            await peer.start()
            signalling.append(peer)
            await until(lambda peer=peer: len(peer.homes()) == 2)  # type: ignore[misc]
            await published(dht, identity.public_key, peer.homes())
            service = MessagingService(
                identity,
                seed,
                tmp / f"{name}.db",
                # a signal lost on a loaded box is retried after 2 s (the receipt decides)
                MessagingConfig(
                    entries, policy=RetryPolicy(online=2.0, held=60.0), drain_every=0.5
                ),
                send_signal=online_sender(peer),
                resolve_bundle=resolve_bundle,
                resolve_mailboxes=resolve_mailboxes,
                clock=time.time,
                on_event=on_event if name == "bob" else lambda event: None,
            )
            services.append(service)
            pairs.append((peer, service))
        (alice_signal, alice), (bob_signal, bob) = pairs
        bob_key = bob.identity.public_key
        bundles[bob_key] = bundle_from_record(bob.core.prekey_record(time.time()))
        refused: list[str] = []

        async def inbox(signal: SignallingService, service: MessagingService) -> None:
            while True:
                delivery = await signal.receive()
                try:
                    envelope = chat_envelope(delivery)
                except ChatSignalRefusedError as error:
                    refused.append(str(error))
                    continue
                if envelope is not None:
                    await service.deliver_online(envelope)

        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(inbox(alice_signal, alice)),
                group.create_task(inbox(bob_signal, bob)),
                group.create_task(alice.run()),
                group.create_task(bob.run()),  # its reply sender carries the receipts
            ]
            texts = [f"online {i}" for i in range(COUNT)]
            for text in texts:
                await alice.send(bob_key, text)
            await until(lambda: len(shown) == COUNT)
            await until(lambda: alice.statistics().outbox == 0)
            # another key's signal carries an envelope claiming alice: refused unopened
            forged = encode_envelope(
                Envelope(
                    alice.identity.public_key,
                    bob_key,
                    None,
                    RatchetHeader(bytes(32), 0, 0),
                    bytes(40),
                )
            )
            mallory = signalling[0]  # a home is a signalling node with its own key
            await mallory.send_signal(bob_key, CHAT_SIGNAL_TAG + forged)
            await until(lambda: len(refused) == 1)
            for task in tasks:
                task.cancel()
        assert shown == texts  # in order, once
        assert alice.statistics().online_sent >= COUNT  # every text went the online way
        assert bob.statistics().online_sent >= 1  # receipts too
    finally:
        for service in services:
            await service.close()
        for box in boxes:
            await box.close()
            box.core.close()
        for signal in reversed(signalling):
            await signal.stop()
        for dht in dhts:
            await dht.close()


@pytest.mark.timeout(120)
def test_chat_over_sealed_signalling(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(scenario(tmp_path), 4 * WAIT))

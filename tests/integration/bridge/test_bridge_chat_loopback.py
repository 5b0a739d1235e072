"""Texts cross the bridge on loopback: SIP MESSAGE from alice's phone <-> E2E chat with bob.

Real parts: the SIP gateway (registrar, MESSAGE queue), alice's SIP UA, the
bridge's UA registered as ``bob`` (the login standing for the P2P peer), and
two messaging services (alice's hosted identity on the bridge, bob's on his
device) with real X3DH/double-ratchet sessions; the online signal path is an
in-memory hand-over (the signalling tests cover the real one). While alice's
phone is unregistered bob's reply waits at the gateway and arrives when it
registers again.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge_chat import ChatBridge, MessageUserAgent
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.useragent import SipUserAgent
from p2pnode.identity import Identity
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox_list import MailboxEntry
from p2pnode.sessions.messaging import (
    MessageShown,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
)
from p2pnode.sessions.prekeys import bundle_from_record

DOMAIN = "gw.test"
WAIT = 15.0


async def scenario(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    _, carol_password = store.add("carol", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN), store)
    await gateway.start()
    assert gateway.address is not None
    phone = SipUserAgent("alice", alice_password, DOMAIN, gateway.address)
    bridge_ua = MessageUserAgent("bob", bob_password, DOMAIN, gateway.address)
    carol = SipUserAgent("carol", carol_password, DOMAIN, gateway.address)

    services: dict[bytes, MessagingService] = {}
    bundles: dict[bytes, PrekeyBundle] = {}
    bob_shown: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
    bridge_holder: list[ChatBridge] = []

    async def send_signal(peer: bytes, envelope: bytes) -> bool:
        await services[peer].deliver_online(envelope)
        return True

    async def resolve_bundle(peer: bytes) -> PrekeyBundle | None:
        return bundles.get(peer)

    async def resolve_mailboxes(peer: bytes) -> tuple[MailboxEntry, ...]:
        return ()

    def alice_event(event: MessagingEvent) -> None:
        if isinstance(event, MessageShown):
            bridge_holder[0].chat_shown(event.message.peer, event.message.text)

    def bob_event(event: MessagingEvent) -> None:
        if isinstance(event, MessageShown):
            bob_shown.put_nowait((event.message.peer, event.message.text))

    def service(name: str, on_event: object) -> MessagingService:
        seed = os.urandom(32)
        return MessagingService(
            Identity.generate(seed),
            seed,
            tmp_path / f"{name}.db",
            MessagingConfig(()),
            send_signal=send_signal,
            resolve_bundle=resolve_bundle,
            resolve_mailboxes=resolve_mailboxes,
            clock=time.time,
            on_event=on_event,  # type: ignore[arg-type]
        )

    alice = service("alice", alice_event)
    bob = service("bob", bob_event)
    alice_key, bob_key = alice.identity.public_key, bob.identity.public_key
    services.update({alice_key: alice, bob_key: bob})
    for one in (alice, bob):
        bundles[one.identity.public_key] = bundle_from_record(one.core.prekey_record(time.time()))
    bridge = ChatBridge(bridge_ua, hosted_login="alice", peer=bob_key, send_chat=alice.send)
    bridge_holder.append(bridge)
    try:
        for ua in (phone, bridge_ua):
            await ua.start()
            await ua.register()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(t) for t in (alice.run(), bob.run(), bridge.run())]
            # Phone -> chat: MESSAGE to bob's login arrives in bob's chat from alice.
            status = await phone.send_message("bob", "hello from the desk phone")
            assert 200 <= status < 300
            async with asyncio.timeout(WAIT):
                sender, text = await bob_shown.get()
            assert (sender, text) == (alice_key, "hello from the desk phone")
            # Chat -> phone: bob's reply arrives at alice's phone as MESSAGE from bob.
            await bob.send(alice_key, "reply über P2P")
            async with asyncio.timeout(WAIT):
                origin, body = await phone.messages.get()
            assert "bob@" in origin and body.decode() == "reply über P2P"
            # Unregistered: the reply waits at the gateway, delivered on registration.
            await phone.register(expires=0)
            await bob.send(alice_key, "while you were away")
            async with asyncio.timeout(WAIT):
                await bridge.wait_to_phones(2)
            assert phone.messages.empty()
            await phone.register()
            async with asyncio.timeout(WAIT):
                origin, body = await phone.messages.get()
            assert body.decode() == "while you were away"
            # Another account may not speak as alice through her bridge: refused, not sent.
            await carol.start()
            await carol.send_message("bob", "I am not alice")
            async with asyncio.timeout(WAIT):
                while bridge.statistics().refused == 0:  # noqa: ASYNC110 - no event to await
                    await asyncio.sleep(0.05)
            stats = bridge.statistics()
            assert (stats.to_chat, stats.to_phones, stats.refused) == (1, 2, 1)
            assert bob_shown.empty()
            for task in tasks:
                task.cancel()
    finally:
        await alice.close()
        await bob.close()
        await phone.close()
        await carol.close()
        await bridge_ua.close()
        await gateway.stop()


@pytest.mark.slow
def test_message_and_chat_cross_and_wait_for_registration(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

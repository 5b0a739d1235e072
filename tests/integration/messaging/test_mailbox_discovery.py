"""Mailboxes found in the network, on loopback with whole nodes (``assemble``).

Three supernodes, each public at 127.0.0.1: a relay (its RELAY_ADVERT is how peers
find it), a home, and a mailbox server publishing its signed offer. alice and bob
name no home and no mailbox in their configs: the relay search finds the
supernodes, the signalling attaches to two of them, and the chat service maps the
supernodes it knows to their offers and picks three mailboxes, registers there and
publishes the list. bob stops; alice's text is held in at least two of them; bob
starts again from his home with the same three (``mailboxes.json``) and reads it.
Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from p2pnode.app.mailbox_state import MAILBOXES_FILE, load_mailbox_state
from p2pnode.app.peer_chat import MailboxServerService
from p2pnode.app.runtime import Assembly
from p2pnode.app.services import DhtService
from p2pnode.connectivity.relays import RELAY_BUCKETS, relay_key
from tests.integration.app.test_peer_messaging import Running, chat_of
from tests.integration.app.test_peer_reach import WAIT, _config, signalling_of, until_contact


async def advertisers(dht: DhtService) -> set[bytes]:
    """Owners of the relay adverts in the DHT."""
    owners: set[bytes] = set()
    for bucket in range(RELAY_BUCKETS):
        owners.update(r.owner for r in (await dht.get(relay_key(bucket))).records)
    return owners


async def run(world: Running) -> None:
    supernodes: list[Assembly] = []
    bootstrap = None
    for index in range(3):
        config = _config(bootstrap, {"home": "serve"})
        config["supernode"] = {"public_ip": "127.0.0.1", "relay_search": False}
        config["relay"] = {"listen": "127.0.0.1:0", "allow_peers": ["127.0.0.0/8"]}
        config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
        node = await world.start(f"super{index}", config)
        host, port = node.dht.address
        bootstrap = bootstrap or f"{host}:{port}"
        supernodes.append(node)
    serving = {}
    for node in supernodes:
        service = node.node.service("mailbox")
        assert isinstance(service, MailboxServerService) and service.server is not None
        serving[node.identity.public_key] = service.server.address[1]
    # a peer's relay search looks at start, then soon again only while it has none:
    # let every supernode's advert be in the DHT first
    async with asyncio.timeout(WAIT):
        while len(await advertisers(supernodes[0].dht)) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    def peer_config() -> dict[str, Any]:
        config = _config(bootstrap, {"home": "attach"})  # no homes named: searched
        config["supernode"] = {"enabled": False, "relay_search": True}
        config["chat"] = {"enabled": True, "drain_every": 1.0, "retry_first": 0.5}
        return config

    async def peer(name: str) -> Assembly:
        node = await world.start(name, peer_config())
        chat = chat_of(node)
        async with asyncio.timeout(WAIT):
            while len(signalling_of(node).homes()) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await chat.attached.wait()
            while chat.messaging is None or len(chat.messaging.mailboxes) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await until_contact(node, node.identity.public_key, 2)
        return node

    alice = await peer("alice")
    bob = await peer("bob")
    bob_key = bob.identity.public_key
    messaging = chat_of(bob).messaging
    assert messaging is not None
    chosen = messaging.mailboxes
    # three distinct supernodes, each at the address its mailbox server listens on
    assert {m.key: m.port for m in chosen} == serving
    assert load_mailbox_state(world.root / "bob" / MAILBOXES_FILE).chosen == chosen
    # alice reads bob's published list from the DHT: the same three
    async with asyncio.timeout(WAIT):
        while set(await chat_of(alice)._mailboxes(bob_key)) != set(chosen):  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    # bob stopped: alice's text is held in at least two of his mailboxes
    await world.stop("bob")
    message_id = await chat_of(alice).send(bob_key, "found the mailboxes myself")
    async with asyncio.timeout(WAIT):
        while chat_of(alice).status(message_id).copies < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    held = 0
    for node in supernodes:
        service = node.node.service("mailbox")
        assert isinstance(service, MailboxServerService) and service.server is not None
        held += service.server.core.held_for(bob_key)
    assert held >= 2

    # bob back from his home: the same mailboxes, and he reads it
    bob = await peer("bob")
    messaging = chat_of(bob).messaging
    assert messaging is not None and messaging.mailboxes == chosen
    async with asyncio.timeout(WAIT):
        while not any(e.message.text == "found the mailboxes myself" for e in chat_of(bob).inbox):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        while not chat_of(alice).status(message_id).delivered:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def scenario(root: Path) -> None:
    async with AsyncExitStack() as stack:
        group = await stack.enter_async_context(asyncio.TaskGroup())
        world = Running(root, group)
        try:
            await run(world)
        finally:
            world.stop_all()


@pytest.mark.slow
def test_peers_without_configured_mailboxes_choose_three(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

"""Messaging in the running node, on loopback: three supernodes (homes and mailbox
servers), alice and bob attached to them, each a whole node built by ``assemble``;
the CLI is the real ``p2pnode`` process.

1. bob online: ``p2pnode send bob`` goes online, bob's ``inbox`` and ``history``
   show it, alice's message ends delivered (the receipt came back); ``p2pnode chat
   bob`` with piped input shows the scrollback, sends a line, prints its receipt;
   bob's ``chat`` view shows the conversation and alice gets his read receipt.
2. bob's node stopped: ``send`` reports the copies held in mailboxes; bob's node
   starts again from its home, drains its mailboxes and shows the text; the
   receipt reaches alice and her outbox empties.
Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from p2pnode.app.config import parse_config
from p2pnode.app.peer_chat import ChatService, MailboxServerService
from p2pnode.app.runtime import Assembly, assemble
from p2pnode.identity import Identity
from tests.integration.app.test_peer_reach import (
    P2PNODE,
    WAIT,
    _config,
    cli,
    signalling_of,
    until_contact,
)


class Running:
    """Nodes each with its own stop event, so one can be stopped and started again."""

    def __init__(self, root: Path, group: asyncio.TaskGroup) -> None:
        self.root = root
        self.group = group
        self.nodes: dict[str, Assembly] = {}
        self.stops: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, name: str, config: dict[str, Any]) -> Assembly:
        home = self.root / name
        home.mkdir(exist_ok=True)
        assembly = assemble(home, parse_config(config), Identity.load_or_create(home))
        stop = self.stops[name] = asyncio.Event()
        self.tasks[name] = self.group.create_task(assembly.node.run(stop))
        async with asyncio.timeout(WAIT):
            await assembly.node.ready.wait()
        self.nodes[name] = assembly
        return assembly

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        async with asyncio.timeout(WAIT):
            await self.tasks[name]

    def stop_all(self) -> None:
        for stop in self.stops.values():
            stop.set()


def chat_of(assembly: Assembly) -> ChatService:
    service = assembly.node.service("chat")
    assert isinstance(service, ChatService)
    return service


async def scenario(root: Path) -> None:
    async with AsyncExitStack() as stack:
        group = await stack.enter_async_context(asyncio.TaskGroup())
        world = Running(root, group)
        try:
            await run(world)
        finally:
            world.stop_all()


async def run(world: Running) -> None:
    supernodes = []
    bootstrap = None
    for index in range(3):
        config = _config(bootstrap, {"home": "serve"})
        config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
        node = await world.start(f"home{index}", config)
        host, port = node.dht.address
        bootstrap = bootstrap or f"{host}:{port}"
        supernodes.append(node)
    for node in supernodes:
        await until_contact(supernodes[-1], node.identity.public_key, 1)
    homes = [n.identity.peer_id for n in supernodes[:2]]
    mailboxes = []
    for node in supernodes:
        service = node.node.service("mailbox")
        assert isinstance(service, MailboxServerService) and service.server is not None
        mailboxes.append(f"{node.identity.peer_id}@127.0.0.1:{service.server.address[1]}")

    def peer_config() -> dict[str, Any]:
        config = _config(bootstrap, {"homes": homes, "home": "attach"})
        config["chat"] = {
            "enabled": True, "mailboxes": mailboxes, "drain_every": 1.0, "retry_first": 0.5,
        }  # fmt: skip
        return config

    async def peer(name: str) -> Assembly:
        node = await world.start(name, peer_config())
        async with asyncio.timeout(WAIT):
            while len(signalling_of(node).homes()) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await chat_of(node).attached.wait()  # bundle published, mailboxes drained
        await until_contact(node, node.identity.public_key, 2)
        return node

    alice = await peer("alice")
    bob = await peer("bob")
    bob_id = bob.identity.peer_id
    alice_home, bob_home = world.root / "alice", world.root / "bob"
    await cli(alice_home, "contacts", "add", "bob", bob_id)

    # 1. bob online
    out = await cli(alice_home, "send", "bob", "hello online")
    first = re.search(r"message ([0-9a-f]+) to " + bob_id + r": (.*)$", out, re.MULTILINE)
    assert first is not None, out
    assert "mailboxes" not in first.group(2), out  # it went online
    await until_delivered(alice, first.group(1))
    assert "hello online" in await cli(bob_home, "inbox")
    history = await cli(bob_home, "history", alice.identity.peer_id)
    assert re.search(r"<- \S+: hello online", history), history

    # the interactive view, its input piped: scrollback, a line sent, its receipt
    view = await chat(alice_home, "bob", "from the chat view\n/quit\n")
    assert "  me: hello online" in view, view
    assert re.search(r"\(message [0-9a-f]{8}: delivered\)", view), view
    assert "(bob is online)" in view, view
    assert "from the chat view" in await cli(bob_home, "inbox")
    # bob accepts alice (read receipts go to accepted peers only) and opens his view of
    # the conversation: what it shows is read, alice learns it
    await cli(bob_home, "contacts", "add", "alice", alice.identity.peer_id)
    shown = await chat(bob_home, alice.identity.peer_id, "/quit\n")
    assert re.search(r": hello online$", shown, re.MULTILINE), shown
    async with asyncio.timeout(WAIT):
        while not chat_of(alice).status(bytes.fromhex(first.group(1))).read:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    # 2. bob stopped: the text waits in his mailboxes
    await world.stop("bob")
    out = await cli(alice_home, "send", "bob", "while you were away", "--wait", "10")
    held = re.search(r"message ([0-9a-f]+) to \S+: queued, (\d+) copies held", out)
    assert held is not None, out
    assert int(held.group(2)) >= 2
    bob = await peer("bob")  # the same home: identity, store
    inbox = await cli(bob_home, "inbox")
    assert "while you were away" in inbox, inbox
    assert "hello online" not in inbox  # shown once, before the restart
    await until_delivered(alice, held.group(1))
    statistics = chat_of(alice).statistics()
    assert statistics is not None and statistics.outbox == 0


async def chat(home: Path, peer: str, typed: str) -> str:
    """``p2pnode chat PEER`` with ``typed`` as its input; its stdout."""
    process = await asyncio.create_subprocess_exec(
        *P2PNODE, "chat", peer, "--linger", "3", "--home", str(home),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate(typed.encode())
    assert process.returncode == 0, err.decode()
    return out.decode()


async def until_delivered(alice: Assembly, message_id: str) -> None:
    chat = chat_of(alice)
    async with asyncio.timeout(WAIT):
        while not chat.status(bytes.fromhex(message_id)).delivered:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


@pytest.mark.slow
def test_send_online_and_through_mailboxes_across_a_restart(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

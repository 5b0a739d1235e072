"""Texts cross the bridge with a real phone: baresip's SIP MESSAGE <-> bob's E2E chat.

baresip 1.0 registers at the gateway as ``alice`` (MD5 digest: its libre
refuses a SHA-256 challenge) with the ``contact`` module (its one contact is
``sip:bob@gw.test``) and the ``stdio`` console on pipes: ``/message TEXT`` on
its stdin sends MESSAGE to bob's login, and it prints every MESSAGE it
receives on stdout as ``sip:bob@gw.test: "TEXT"``. The bridge's UA is bob's
registered device at the gateway; the chat is two real messaging services
(alice's hosted identity on the bridge, bob's on his device: X3DH and double
ratchet), their online signals handed over in memory as in
``test_bridge_chat_loopback.py``.

What must hold: baresip's text shows in bob's chat from alice's identity;
bob's reply is printed by baresip; after baresip exits (it unregisters: the
gateway holds no binding for alice) bob's next reply is accepted and waits at
the gateway, and a new baresip of alice prints it once it registers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge_chat import ChatBridge, MessageUserAgent
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from tests.harness.baresip import write_baresip_config
from tests.harness.tools import require_tool
from tests.integration.bridge.chat_pair import ChatPair

pytestmark = pytest.mark.interop
DOMAIN = "gw.test"
WAIT = 20.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Console:
    """baresip's stdio console: commands in on stdin, every printed line kept."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    async def pump(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode("utf-8", errors="replace"))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, needle: str) -> None:
        """Until a printed line holds ``needle`` (the caller bounds the wait)."""
        while not any(needle in line for line in self.lines):
            if self.process.stdout is not None and self.process.stdout.at_eof():
                raise AssertionError(f"baresip exited without printing {needle}")
            self._changed.clear()
            await self._changed.wait()

    async def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{text}\n".encode())
        await self.process.stdin.drain()


async def start_phone(baresip: str, directory: Path) -> Console:
    process = await asyncio.create_subprocess_exec(
        baresip, "-f", str(directory), "-t", "60",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Console(process)


async def stop_phone(console: Console) -> None:
    """SIGTERM: baresip unregisters (REGISTER Expires 0) and exits."""
    process = console.process
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await asyncio.wait_for(process.wait(), 5)


async def scenario(baresip: str, tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN, digest_algorithms=(Algorithm.MD5,)), store)
    await gateway.start()
    assert gateway.address is not None
    phone_dir = tmp_path / "baresip"
    write_baresip_config(
        phone_dir,
        listen=f"127.0.0.1:{free_udp_port()}",
        account=f"alice@{DOMAIN}",
        password=alice_password,
        outbound=f"{gateway.address[0]}:{gateway.address[1]}",
        net_interface="127.0.0.1",
        contacts=(f"sip:bob@{DOMAIN}",),
    )
    bridge_ua = MessageUserAgent("bob", bob_password, DOMAIN, gateway.address)
    pair = ChatPair(tmp_path)
    alice, bob, alice_key, bob_shown = pair.alice, pair.bob, pair.alice_key, pair.bob_shown
    bridge = ChatBridge(bridge_ua, hosted_login="alice", peer=pair.bob_key, send_chat=alice.send)
    pair.bridge = bridge
    phone = await start_phone(baresip, phone_dir)
    try:
        await bridge_ua.start()
        await bridge_ua.register()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(t) for t in (alice.run(), bob.run(), bridge.run())]
            tasks.append(group.create_task(phone.pump()))
            async with asyncio.timeout(WAIT):
                await phone.wait_for("200 OK")  # registered as alice
            # baresip -> chat: its MESSAGE to bob's login shows in bob's chat from alice.
            await phone.command("/message hello from baresip über SIP")
            async with asyncio.timeout(WAIT):
                sender, text = await bob_shown.get()
            assert (sender, text) == (alice_key, "hello from baresip über SIP")
            # chat -> baresip: bob's reply is a MESSAGE from bob's login that baresip prints.
            await bob.send(alice_key, "reply über P2P")
            async with asyncio.timeout(WAIT):
                await phone.wait_for(f'sip:bob@{DOMAIN}: "reply über P2P"')
            # baresip off: it unregisters; bob's next reply waits at the gateway.
            await stop_phone(phone)
            assert not gateway.registrar.bindings("alice", gateway_now(gateway))
            await bob.send(alice_key, "while you were away")
            async with asyncio.timeout(WAIT):
                await bridge.wait_to_phones(2)  # accepted by the gateway (202: queued)
            assert not any("while you were away" in line for line in phone.lines)
            # baresip back on: registration delivers the waiting reply.
            phone = await start_phone(baresip, phone_dir)
            tasks.append(group.create_task(phone.pump()))
            async with asyncio.timeout(WAIT):
                await phone.wait_for(f'sip:bob@{DOMAIN}: "while you were away"')
            stats = bridge.statistics()
            assert (stats.to_chat, stats.to_phones, stats.refused, stats.failed) == (1, 2, 0, 0)
            assert bob_shown.empty()
            await stop_phone(phone)
            for task in tasks:
                task.cancel()
    finally:
        await stop_phone(phone)
        await pair.close()
        await bridge_ua.close()
        await gateway.stop()


def gateway_now(gateway: SipGateway) -> float:
    return gateway._now()


@pytest.mark.slow
def test_baresip_message_reaches_the_chat_and_replies_wait_for_its_registration(
    tmp_path: Path,
) -> None:
    baresip = require_tool("baresip")
    asyncio.run(scenario(baresip, tmp_path))

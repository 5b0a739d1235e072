"""The issue's chat proof with a real phone, under ``p2pnode run``: baresip <-> bob's chat.

The nodes of ``test_sip_bridge_chat_run`` (H a home, A the gateway with
``bridge_hosted = ["alice"]``, B a peer with ``[chat]`` and the login
``bob``), all from TOML files. baresip 1.0 registers at A as ``alice`` (MD5;
the ``contact`` module with ``sip:bob@gw.test``, the ``stdio`` console on
pipes, as in ``tests/integration/bridge/test_bridge_chat_baresip.py``).

What must hold: baresip's ``/message`` to bob shows in B's inbox from alice's
hosted identity; B's reply is printed by baresip as a MESSAGE from B's peer
id at the gateway; baresip exits (it unregisters), B's next reply is held on
A's disk, and a new baresip of alice prints it once it registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

from p2pnode.app.peer_chat import ChatService
from p2pnode.app.services import directory_of
from p2pnode.app.sip_service import ACCOUNTS_FILE, SipService
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.directory.verifiers import countersign
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.identity import Identity
from p2pnode.records import RecordKind
from tests.harness.baresip import write_baresip_config
from tests.harness.tools import require_tool
from tests.integration.app.test_sip_bridge_chat_run import (
    CHAT_TOML,
    gateway_ready,
    held,
    shown_at,
)
from tests.integration.app.test_sip_bridge_run import (
    DOMAIN,
    HOME_TOML,
    gateway_toml,
    has_home,
    hostport,
    peer_toml,
    running,
    service,
    until,
)
from tests.integration.bridge.test_bridge_chat_baresip import (
    Console,
    free_udp_port,
    start_phone,
    stop_phone,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow]
WAIT = 30.0


async def scenario(baresip: str, root: Path) -> None:
    verifier = Identity.generate()
    a_home, b_home, h_home = root / "a", root / "b", root / "h"
    for home in (a_home, b_home, h_home):
        home.mkdir()
    store = AccountStore.open(a_home / ACCOUNTS_FILE, DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    alice_account = store.get("alice")
    assert alice_account is not None
    store.close()
    alice_key = identity_of(alice_account).public_key

    async with contextlib.AsyncExitStack() as stack:
        h = await stack.enter_async_context(running(h_home, HOME_TOML))
        h_id = h.identity.peer_id
        b = await stack.enter_async_context(
            running(b_home, peer_toml(hostport(h), h_id) + CHAT_TOML)
        )
        a_toml = gateway_toml(verifier.peer_id, hostport(h), h_id, "attach")
        a = await stack.enter_async_context(running(a_home, a_toml))
        bridges = await gateway_ready(a, alice_key, h)
        await until(service(b, "signalling", SignallingService).homes, "b attached")
        await until(lambda: has_home(h, b.identity.public_key), "b's contact published")
        chat_b = service(b, "chat", ChatService)
        await until(chat_b.attached.is_set, "b's chat attached")
        vouched = countersign(
            verifier, RecordKind.NAME_CLAIM, "bob", b.identity.public_key, now=time.time()
        )
        await directory_of(b.dht, frozenset()).claim_name(b.identity, "bob", add=[vouched])
        sip = service(a, "sip", SipService)
        assert sip.gateway is not None and sip.gateway.address is not None
        phone_dir = root / "baresip"
        write_baresip_config(
            phone_dir,
            listen=f"127.0.0.1:{free_udp_port()}",
            account=f"alice@{DOMAIN}",
            password=alice_password,
            outbound=f"{sip.gateway.address[0]}:{sip.gateway.address[1]}",
            net_interface="127.0.0.1",
            contacts=(f"sip:bob@{DOMAIN}",),
        )
        phones: list[Console] = []

        async def stop_all() -> None:
            for one in phones:
                await stop_phone(one)

        stack.push_async_callback(stop_all)
        async with asyncio.TaskGroup() as group:
            phone = await start_phone(baresip, phone_dir)
            phones.append(phone)
            pumps = [group.create_task(phone.pump())]
            async with asyncio.timeout(WAIT):
                await phone.wait_for("200 OK")  # registered as alice
            # baresip -> chat: shown at bob's node from alice's hosted identity.
            await phone.command("/message hello from baresip über SIP")
            await until(lambda: shown_at(b, "hello from baresip über SIP"), "text at bob")
            assert shown_at(b, "hello from baresip über SIP") == alice_key
            # chat -> baresip: bob's reply, from his peer id at the gateway.
            await chat_b.send(alice_key, "reply über P2P")
            bob_uri = f"sip:{b.identity.peer_id}@{DOMAIN}"
            async with asyncio.timeout(WAIT):
                await phone.wait_for(f'{bob_uri}: "reply über P2P"')
            # baresip off (it unregisters): bob's next reply is held on the gateway's disk.
            await stop_phone(phone)
            await chat_b.send(alice_key, "while you were away")
            await until(lambda: held(bridges) == 1, "reply held")
            # baresip back: its registration delivers the held reply.
            phone = await start_phone(baresip, phone_dir)
            phones.append(phone)
            pumps.append(group.create_task(phone.pump()))
            async with asyncio.timeout(WAIT):
                await phone.wait_for(f'{bob_uri}: "while you were away"')
            await until(lambda: held(bridges) == 0, "held reply delivered")
            await stop_phone(phone)
            for pump in pumps:
                pump.cancel()


def test_baresip_texts_a_login_and_gets_the_replies_through_p2pnode_run(tmp_path: Path) -> None:
    baresip = require_tool("baresip")
    asyncio.run(scenario(baresip, tmp_path))

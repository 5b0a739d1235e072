"""Texts cross the SIP <-> P2P bridge as ``p2pnode run`` hosts it: nodes from TOML files only.

Three nodes (the setup of ``test_sip_bridge_run``): H, a serving home; A, the
SIP gateway with ``[sip] bridge_hosted = ["alice"]`` attached to H; B, a peer
with ``[chat]`` attached to H that claims the login ``bob`` (countersigned by
a verifier A trusts). Nothing is wired by hand: the chat of alice's hosted
identity, its stores under A's home and the chat bridge are what ``assemble``
builds from the files.

What must hold: alice's phone (our UA) sends MESSAGE to ``bob``: 202, and
B's inbox shows the text from alice's hosted identity. B replies by chat:
the phone gets a MESSAGE from ``sip:<B's peer id>@gw.test``, and a MESSAGE
to that From reaches B too; a login nobody claims gets 404. carol, an
account with no bridge of her own, is refused 403 (never sent as the
gateway). The phone unregisters: B's next reply is held on A's disk (A
answers B's chat, the phone has nothing). B stops; the phone's next text is
answered 202 (in alice's chat outbox on A's disk). A stops, B starts again,
A starts again from its home (new ports): A's outbox delivers the text to B,
the phone registers at the new gateway and gets the held reply, and a new
text from the phone reaches B (the ratchet state came back from disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pnode.app.peer_chat import ChatService
from p2pnode.app.runtime import Assembly
from p2pnode.app.services import directory_of
from p2pnode.app.sip_bridge import SipBridgeService
from p2pnode.app.sip_service import ACCOUNTS_FILE, SipService
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.directory.verifiers import countersign
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge_chat import MessageUserAgent
from p2pnode.gateways.sip.bridge_routing import NOT_THIS_BRIDGE
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.message import build_response
from p2pnode.gateways.sip.useragent import SipUserAgent
from p2pnode.identity import Identity
from p2pnode.records import RecordKind
from tests.integration.app.test_sip_bridge_run import (
    DOMAIN,
    HOME_TOML,
    WAIT,
    gateway_toml,
    has_home,
    hostport,
    peer_toml,
    ready,
    running,
    service,
    until,
)

CHAT_TOML = "\n[chat]\nenabled = true\n"


def shown_at(b: Assembly, text: str) -> bytes | None:
    """The sender of ``text`` in B's inbox, None while it has not arrived."""
    inbox = service(b, "chat", ChatService).inbox
    return next((e.message.peer for e in inbox if e.message.text == text), None)


def held(bridges: SipBridgeService) -> int:
    chats = bridges.chats()
    return chats[0].statistics.held if chats else -1


async def gateway_ready(a: Assembly, alice_key: bytes, h: Assembly) -> SipBridgeService:
    bridges = service(a, "sip-bridge", SipBridgeService)
    await until(lambda: ready(bridges), "bridges attached")
    await until(lambda: all(c.attached for c in bridges.chats()), "alice's chat attached")
    await until(lambda: has_home(h, alice_key), "alice's hosted identity reachable")
    return bridges


async def scenario(root: Path) -> None:
    verifier = Identity.generate()
    a_home, b_home, h_home = root / "a", root / "b", root / "h"
    for home in (a_home, b_home, h_home):
        home.mkdir()
    store = AccountStore.open(a_home / ACCOUNTS_FILE, DOMAIN)  # as `p2pnode sip account add`
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, carol_password = store.add("carol", None, randbytes=os.urandom)  # no bridge of her own
    alice_account = store.get("alice")
    assert alice_account is not None
    store.close()
    alice_key = identity_of(alice_account).public_key

    async with contextlib.AsyncExitStack() as stack:
        h = await stack.enter_async_context(running(h_home, HOME_TOML))
        h_id = h.identity.peer_id
        b_toml = peer_toml(hostport(h), h_id) + CHAT_TOML
        b_first = contextlib.AsyncExitStack()
        b = await b_first.enter_async_context(running(b_home, b_toml))
        a_toml = gateway_toml(verifier.peer_id, hostport(h), h_id, "attach")
        first = contextlib.AsyncExitStack()
        stack.push_async_callback(first.aclose)
        stack.push_async_callback(b_first.aclose)
        a = await first.enter_async_context(running(a_home, a_toml))
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
        phone = SipUserAgent("alice", alice_password, DOMAIN, sip.gateway.address)
        carol = SipUserAgent("carol", carol_password, DOMAIN, sip.gateway.address)
        stack.push_async_callback(phone.close)
        stack.push_async_callback(carol.close)
        await phone.start()
        await carol.start()
        await phone.register()

        # 1. Phone -> chat: accepted into alice's chat outbox (202), shown at bob's node.
        async with asyncio.timeout(WAIT):
            status = await phone.send_message("bob", "hello from the desk phone")
        assert status == 202
        await until(lambda: shown_at(b, "hello from the desk phone"), "text at bob")
        assert shown_at(b, "hello from the desk phone") == alice_key

        # 2. Chat -> phone: bob's reply comes from his peer id at the gateway's domain.
        await chat_b.send(alice_key, "reply über P2P")
        async with asyncio.timeout(WAIT):
            origin, body = await phone.messages.get()
        assert origin == f"sip:{b.identity.peer_id}@{DOMAIN}"
        assert body.decode() == "reply über P2P"

        # 2b. Answering that From reaches the same peer (by peer id, whatever bob's login).
        async with asyncio.timeout(WAIT):
            status = await phone.send_message(origin, "answered by peer id")
        assert status == 202
        await until(lambda: shown_at(b, "answered by peer id"), "reply by peer id at bob")
        # A login nobody claims: the phone learns it at once (404), nothing is kept.
        async with asyncio.timeout(WAIT):
            unknown = await phone.send_message("nobody", "lost?")
        assert unknown == 404

        # 3. carol has no bridge of her own: refused, not sent as the gateway.
        async with asyncio.timeout(WAIT):
            refused = await carol.send_message("bob", "I have no bridge")
        assert refused == 403

        # 4. The phone is away: bob's next reply is held on the gateway's disk.
        await phone.register(expires=0)
        await chat_b.send(alice_key, "while you were away")
        await until(lambda: held(bridges) == 1, "reply held for the phone")
        assert phone.messages.empty()

        # 4b. bob's node stops: the phone's next text waits in alice's chat outbox.
        await b_first.aclose()
        async with asyncio.timeout(WAIT):
            status = await phone.send_message("bob", "while bob was away")
        assert status == 202

        # 5. The gateway node stops; bob's comes back; the gateway starts again from its
        # home (new ports): its outbox reaches bob, its held reply the phone.
        await first.aclose()
        b = await stack.enter_async_context(running(b_home, b_toml))
        await until(service(b, "signalling", SignallingService).homes, "b attached again")
        await until(service(b, "chat", ChatService).attached.is_set, "b's chat again")
        a = await stack.enter_async_context(running(a_home, a_toml))
        bridges = await gateway_ready(a, alice_key, h)
        assert held(bridges) == 1  # read back from disk
        sip = service(a, "sip", SipService)
        assert sip.gateway is not None and sip.gateway.address is not None
        phone.server = sip.gateway.address
        await phone.register()
        async with asyncio.timeout(WAIT):
            origin, body = await phone.messages.get()
        assert (origin, body.decode()) == (
            f"sip:{b.identity.peer_id}@{DOMAIN}",
            "while you were away",
        )
        await until(lambda: held(bridges) == 0, "held reply delivered")
        await until(lambda: shown_at(b, "while bob was away"), "outbox text at bob")
        assert shown_at(b, "while bob was away") == alice_key
        # The restored ratchet carries the phone's next text to bob.
        async with asyncio.timeout(WAIT):
            status = await phone.send_message("bob", "back after the restart")
        assert status == 202
        await until(lambda: shown_at(b, "back after the restart"), "second text at bob")
        assert shown_at(b, "back after the restart") == alice_key
        statistics = bridges.chats()[0].statistics
        assert (statistics.to_chat, statistics.to_phones, statistics.held) == (1, 1, 0)
        assert (statistics.refused, statistics.failed) == (0, 0)
        # The same on /metrics (the restarted node counts from its start).
        assert a.metrics is not None
        async with aiohttp.ClientSession() as http, http.get(a.metrics.url) as scraped:
            metrics = await scraped.text()
        values = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
        }
        texts = {
            what: values[("p2pnode_sip_bridge_texts_total", (("what", what),))]
            for what in ("to-chat", "to-phones", "refused", "failed")
        }
        assert texts == {"to-chat": 1.0, "to-phones": 1.0, "refused": 0.0, "failed": 0.0}
        assert values[("p2pnode_sip_bridge_texts_held", ())] == 0.0


@pytest.mark.slow
def test_texts_cross_the_bridge_p2pnode_run_builds_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    asyncio.run(scenario(tmp_path))


async def fork(tmp_path: Path) -> None:
    """The gateway alone: bridge texts are never held, the best bridge answer goes back."""
    store = AccountStore(tmp_path / "accounts.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bridge_password = store.add("p2p", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN), store, p2p_login="p2p")
    await gateway.start()
    assert gateway.address is not None
    phone = SipUserAgent("alice", alice_password, DOMAIN, gateway.address)
    bridges = [MessageUserAgent("p2p", bridge_password, DOMAIN, gateway.address) for _ in "ab"]
    registered: list[str] = []
    gateway.registration_listeners.append(registered.append)

    async def answer(ua: MessageUserAgent, status: int, reason: str) -> None:
        effect = await ua.pending_messages.get()
        ua.stack.respond(effect.key, build_response(effect.request, status, reason, to_tag="t"))

    try:
        for ua in (phone, *bridges):
            await ua.start()
        await phone.register()
        async with asyncio.timeout(WAIT):
            # No bridge registered: 480 at once, not 202 and held in memory.
            assert await phone.send_message("bob", "nobody bridges") == 480
            for ua in bridges:
                await ua.register()
            # Two bridges: the one not taking it says 503, the other 404; 404 wins.
            texting = asyncio.create_task(phone.send_message("bob", "to whom?"))
            await answer(bridges[0], *NOT_THIS_BRIDGE)
            await answer(bridges[1], 404, "Not Found")
            assert await texting == 404
            # A 202 from one bridge answers the phone 202 (in the outbox, not delivered).
            texting = asyncio.create_task(phone.send_message("bob", "kept"))
            await answer(bridges[0], *NOT_THIS_BRIDGE)
            await answer(bridges[1], 202, "Accepted")
            assert await texting == 202
        assert len(gateway.queue) == 0  # nothing held by the gateway
        assert registered == ["alice", "p2p", "p2p"]
    finally:
        for ua in (phone, *bridges):
            await ua.close()
        await gateway.stop()
        store.close()


def test_the_gateway_never_holds_bridge_texts_and_returns_the_best_answer(tmp_path: Path) -> None:
    asyncio.run(fork(tmp_path))

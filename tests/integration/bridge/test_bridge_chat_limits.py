"""The chat bridge at its edges: a failing directory, and chat texts longer than a phone takes.

Real parts: the SIP gateway, alice's phone (our UA), the bridge's UA as bob's
device, two real messaging services (``chat_pair.py``). alice's service asks
the directory for bob's prekey bundle: the first lookup times out, the next
finds the network unreachable, the third answers. The bridge answers the
first two MESSAGEs 480 and keeps running; the gateway, whose only device for
bob refused them, holds them and answers the phone 202 (RFC 3428: accepted,
not yet delivered), the third 200. bob sees the third text at once, and the
first two when the bridge registers again (the gateway hands a login's held
messages to its devices on registration) - no text is lost to a directory
failure. A MESSAGE the bridge refuses for good (carol, another account, may
not speak as alice: 403) is not held: carol gets the 403.

Back: bob's 2,884-character reply (3,124 UTF-8 bytes with its umlauts) is
more than one MESSAGE over UDP should carry (RFC 3428 §4: under 1300
bytes), so the phone gets it as consecutive MESSAGEs of at most
``MAX_PHONE_BODY_BYTES`` each, cut between characters, which joined in
arrival order are the reply.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge_chat import (
    MAX_PHONE_BODY_BYTES,
    ChatBridge,
    MessageUserAgent,
    phone_parts,
)
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.useragent import SipUserAgent
from p2pnode.sessions.crypto import PrekeyBundle
from tests.integration.bridge.chat_pair import ChatPair

DOMAIN = "gw.test"
WAIT = 15.0
LONG_REPLY = "Grüße aus dem P2P-Netz. " * 120 + "Ende"  # 2,884 characters, 3,124 bytes


@given(st.text(max_size=3000), st.integers(min_value=4, max_value=900))
def test_phone_parts_cut_between_characters_within_the_limit(text: str, limit: int) -> None:
    parts = phone_parts(text, limit)
    assert "".join(parts) == text
    assert all(len(part.encode("utf-8")) <= limit for part in parts)
    assert all(parts) or parts == ("",)  # no empty piece, except for an empty text


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
    pair = ChatPair(tmp_path)
    failures: list[BaseException] = [TimeoutError(), OSError("network unreachable")]

    async def flaky_directory(peer: bytes) -> PrekeyBundle | None:
        if failures:
            raise failures.pop(0)
        return pair.bundles.get(peer)

    pair.resolve_bundle = flaky_directory
    bridge = ChatBridge(
        bridge_ua, hosted_login="alice", peer=pair.bob_key, send_chat=pair.alice.send
    )
    pair.bridge = bridge
    try:
        for ua in (phone, bridge_ua):
            await ua.start()
            await ua.register()
        await carol.start()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(t) for t in (pair.alice.run(), pair.bob.run(), bridge.run())]
            statuses = [await phone.send_message("bob", f"try {n}") for n in range(3)]
            assert statuses == [202, 202, 200]  # held by the gateway, held, delivered
            assert bridge.statistics().failed == 2  # the bridge answered those two 480
            async with asyncio.timeout(WAIT):
                assert await pair.bob_shown.get() == (pair.alice_key, "try 2")
            await bridge_ua.register()  # the held texts come again; the directory answers now
            async with asyncio.timeout(WAIT):
                shown = [await pair.bob_shown.get() for _ in range(2)]
            assert shown == [(pair.alice_key, "try 0"), (pair.alice_key, "try 1")]
            # Refused for good by the only device: the sender hears it, nothing is held.
            assert await carol.send_message("bob", "I am not alice") == 403
            # The long reply: consecutive MESSAGEs, each within the limit, joined in order.
            await pair.bob.send(pair.alice_key, LONG_REPLY)
            expected = len(phone_parts(LONG_REPLY))
            bodies = []
            async with asyncio.timeout(WAIT):
                for _ in range(expected):
                    origin, body = await phone.messages.get()
                    assert "bob@" in origin
                    bodies.append(body)
                await bridge.wait_to_phones(1)
            assert expected == 4  # 3,124 bytes in pieces of at most 800
            assert all(len(body) <= MAX_PHONE_BODY_BYTES for body in bodies)
            assert "".join(body.decode("utf-8") for body in bodies) == LONG_REPLY
            stats = bridge.statistics()
            assert (stats.to_chat, stats.to_phones, stats.refused, stats.failed) == (3, 1, 1, 2)
            assert pair.bob_shown.empty() and phone.messages.empty()
            for task in tasks:
                task.cancel()
    finally:
        await pair.close()
        await phone.close()
        await carol.close()
        await bridge_ua.close()
        await gateway.stop()


def test_directory_failures_answer_480_and_long_replies_arrive_in_pieces(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))


def test_long_reply_is_more_than_one_udp_message() -> None:
    assert len(LONG_REPLY.encode("utf-8")) > 3 * MAX_PHONE_BODY_BYTES


@pytest.mark.parametrize(("text", "pieces"), [("", ("",)), ("ab", ("ab",)), ("äbc", ("ä", "bc"))])
def test_phone_parts_small_cases(text: str, pieces: tuple[str, ...]) -> None:
    assert phone_parts(text, 2) == pieces

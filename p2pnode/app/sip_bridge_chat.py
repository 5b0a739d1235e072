"""Texts across the SIP <-> P2P bridge under ``p2pnode run``: one chat per hosted identity.

Why here and not in ``sip_bridge``: the call bridges need none of it, and the
chat of a hosted identity is a whole messaging service (the same
``peer_chat.ChatService`` a peer runs) with its own home:
``<home>/sip-bridge/<hosted peer id>/`` holds its ``chat.db`` (X3DH keys,
ratchet state, outbox: a text a phone sent is answered 202 only once it is
committed there) and ``phones.db`` (``bridge_chat.HeldTexts``: chat texts no
phone took yet). Both survive a restart of the node, so nothing accepted is
lost: the outbox retries toward the peer, the held texts go out on the hosted
login's next REGISTER.

Each hosted bridge (``bridge_hosted``) gets one: its online path is that
bridge's signalling ("chat" channel), its prekey bundle and mailbox list are
published in the DHT under the hosted identity, the mailboxes and retry
settings are the node's ``[chat]`` ones. The bridge of the gateway's own
identity carries no texts: local accounts without a bridge of their own are
refused ``NO_CHAT`` (403), never sent as the gateway (a text, unlike a call,
carries no verified-by-the-gateway mark a peer would see), and foreign
networks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from p2pnode.app.peer_chat import ChatService
from p2pnode.app.peer_config import ChatSection
from p2pnode.app.services import DhtService
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.gateways.sip.bridge_chat import ChatBridge, ChatBridgeStatistics, HeldTexts
from p2pnode.gateways.sip.bridge_routing import NOT_THIS_BRIDGE, BridgeCallers, takes_caller
from p2pnode.gateways.sip.bridge_ua import BridgeUserAgent
from p2pnode.identity import Identity
from p2pnode.sessions.messaging import MessageShown

__all__ = [
    "BRIDGE_DIR",
    "NO_CHAT",
    "PHONES_DB",
    "BridgeChat",
    "BridgeChatSnapshot",
    "refuse_texts",
    "start_chat",
]

logger = logging.getLogger(__name__)

BRIDGE_DIR = "sip-bridge"
PHONES_DB = "phones.db"
NO_CHAT = (403, "No P2P Chat For This Account")


@dataclass(frozen=True)
class BridgeChatSnapshot:
    """One hosted identity's texts: attached (bundle published, mailboxes drained)."""

    login: str
    peer_id: str
    attached: bool
    statistics: ChatBridgeStatistics


@dataclass
class BridgeChat:
    """The chat of one hosted identity and the bridge carrying it to that login's phones."""

    chat: ChatService
    bridge: ChatBridge
    held: HeldTexts

    async def run(self) -> None:
        """Publish, attach and read the chat channel; carry texts both ways."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.chat.run())
            tasks.create_task(self.bridge.run())

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.chat.stop()
        self.held.close()

    def snapshot(self) -> BridgeChatSnapshot:
        return BridgeChatSnapshot(
            self.bridge.hosted_login,
            self.chat.identity.peer_id,
            self.chat.attached.is_set(),
            self.bridge.statistics(),
        )


async def start_chat(
    home: Path,
    login: str,
    identity: Identity,
    dht: DhtService,
    signalling: SignallingService,
    section: ChatSection,
    ua: BridgeUserAgent,
    resolve: Callable[[str], Awaitable[str | None]],
) -> BridgeChat:
    """Open the hosted identity's chat (its store) and its bridge; ``run`` starts them."""
    where = home / BRIDGE_DIR / identity.peer_id
    where.mkdir(parents=True, exist_ok=True)
    bridge: ChatBridge | None = None

    def shown(event: object) -> None:
        if isinstance(event, MessageShown) and bridge is not None:
            row = event.message
            bridge.chat_shown(row.peer, row.text, row.message_id)

    chat = ChatService(where, identity, dht, signalling, section, emit=shown)
    await chat.start()
    held = HeldTexts(where / PHONES_DB)
    bridge = ChatBridge(
        ua,
        hosted_login=login,
        peer=None,
        send_chat=chat.send,
        resolve=resolve,
        held=held,
        not_mine=NOT_THIS_BRIDGE,
    )
    return BridgeChat(chat, bridge, held)


async def refuse_texts(ua: BridgeUserAgent, own_bridges: frozenset[str]) -> None:
    """The gateway's own bridge: texts of logins with a bridge of their own are left to
    it (``NOT_THIS_BRIDGE`` loses the gateway's fork), every other text gets ``NO_CHAT``."""
    while True:
        effect = await ua.pending_messages.get()
        sender = effect.request.from_.uri
        theirs = any(
            takes_caller(BridgeCallers.HOSTED, sender, ua.domain, login) for login in own_bridges
        )
        with contextlib.suppress(Exception):  # the gateway's transaction may be gone
            ua.refuse(effect, *(NOT_THIS_BRIDGE if theirs else NO_CHAT), ua.token())

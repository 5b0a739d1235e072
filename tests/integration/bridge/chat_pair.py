"""Two real messaging services for the chat-bridge tests: alice's hosted identity and bob's.

Real X3DH / double-ratchet sessions and SQLite stores; their online signals are
handed over in memory (the signalling tests cover the real path). alice's
shown messages go to the chat bridge (``ChatPair.bridge``, set by the test);
bob's are queued in ``bob_shown``. ``resolve_bundle`` may be replaced to make
the directory fail the way a real one does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2pnode.gateways.sip.bridge_chat import ChatBridge
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

__all__ = ["ChatPair"]


class ChatPair:
    def __init__(self, tmp_path: Path) -> None:
        self.services: dict[bytes, MessagingService] = {}
        self.bundles: dict[bytes, PrekeyBundle] = {}
        self.bob_shown: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
        self.bridge: ChatBridge | None = None
        # What alice's service asks the directory for bob's bundle (the tests may fail it).
        self.resolve_bundle: Callable[[bytes], Awaitable[PrekeyBundle | None]] = self._bundle
        self.alice = self._service(tmp_path, "alice", self._alice_event)
        self.bob = self._service(tmp_path, "bob", self._bob_event)
        for one in (self.alice, self.bob):
            key = one.identity.public_key
            self.services[key] = one
            self.bundles[key] = bundle_from_record(one.core.prekey_record(time.time()))

    @property
    def alice_key(self) -> bytes:
        return self.alice.identity.public_key

    @property
    def bob_key(self) -> bytes:
        return self.bob.identity.public_key

    async def close(self) -> None:
        await self.alice.close()
        await self.bob.close()

    async def _bundle(self, peer: bytes) -> PrekeyBundle | None:
        return self.bundles.get(peer)

    async def _send_signal(self, peer: bytes, envelope: bytes) -> bool:
        await self.services[peer].deliver_online(envelope)
        return True

    async def _resolve(self, peer: bytes) -> PrekeyBundle | None:
        return await self.resolve_bundle(peer)

    @staticmethod
    async def _no_mailboxes(peer: bytes) -> tuple[MailboxEntry, ...]:
        return ()

    def _alice_event(self, event: MessagingEvent) -> None:
        if isinstance(event, MessageShown) and self.bridge is not None:
            self.bridge.chat_shown(event.message.peer, event.message.text)

    def _bob_event(self, event: MessagingEvent) -> None:
        if isinstance(event, MessageShown):
            self.bob_shown.put_nowait((event.message.peer, event.message.text))

    def _service(
        self, tmp_path: Path, name: str, on_event: Callable[[MessagingEvent], None]
    ) -> MessagingService:
        seed = os.urandom(32)
        return MessagingService(
            Identity.generate(seed),
            seed,
            tmp_path / f"{name}.db",
            MessagingConfig(()),
            send_signal=self._send_signal,
            resolve_bundle=self._resolve,
            resolve_mailboxes=self._no_mailboxes,
            clock=time.time,
            on_event=on_event,
        )

"""Messaging in the running node: the mailbox server (supernodes) and the chat service.

``[mailbox] serve``: a ``MailboxServer`` on TCP with its SQLite file in the home
(it survives restarts). ``[chat] enabled``: a ``MessagingService`` whose online
path is the signalling's "chat" channel, whose prekey bundle and mailbox list are
signed records in the DHT, and whose store is ``<home>/chat.db``. On start it
publishes both records, registers at its mailboxes and drains them (messages
that waited while the node was stopped are shown then, and their receipts go
back); then it runs the outbox pump and reads the chat channel.

Why the inbox is a bounded in-memory list: the store keeps every message per
conversation (``history``); the inbox is what arrived since the node started,
which is what ``p2pnode inbox`` shows (``MAX_INBOX`` newest).

Strangers (``peer_contacts``): the peer app screens every shown message; a
stranger's is kept in the inbox flagged as a request (the app shows no
conversation for it until accepted), a blocked peer's is neither kept nor
announced, and its online envelopes are dropped before decryption. Receipts
follow the same screen: a blocked peer's mailbox copies (fetched in bulk, so
decrypted and stored) get no delivered receipt (the receive step withholds it);
a stranger's get "delivered" but never "read" until the person accepts it (a
contact, or someone we wrote to), whatever a page marks. Unread counts
come from the store (``read_here``), so a reloaded page or a restarted node
shows the same badges. Gaps are announced by peer id (``ConversationGap``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from p2pnode.app.config import NodeConfig, hostport
from p2pnode.app.peer_config import ChatSection, MailboxSection
from p2pnode.app.peer_contacts import Screening
from p2pnode.app.service import Service
from p2pnode.app.services import DhtService
from p2pnode.connectivity.signalling import SignalChannel, SignallingService
from p2pnode.identity import Identity, peer_id_for, public_key_from_peer_id
from p2pnode.records import RecordKind, SignedRecord, record_key
from p2pnode.sessions.chat import MessageStatus
from p2pnode.sessions.chat_signal import ChatSignalRefusedError, chat_envelope, online_sender
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MAILBOX_LIST_SUBJECT, MailboxEntry, mailboxes_from_record
from p2pnode.sessions.mailbox_service import MailboxServer
from p2pnode.sessions.messaging import (
    GapDetected,
    MessageShown,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
    MessagingStatistics,
)
from p2pnode.sessions.outbox import RetryPolicy
from p2pnode.sessions.prekeys import PREKEY_SUBJECT, bundle_from_record
from p2pnode.sessions.store import MessageRow

__all__ = [
    "CHAT_DB",
    "MAILBOX_DB",
    "MAX_INBOX",
    "ChatService",
    "ConversationGap",
    "InboxEntry",
    "MailboxServerService",
    "MailboxServerStatistics",
    "Screen",
    "add_chat_services",
    "parse_mailbox",
]

logger = logging.getLogger(__name__)

CHAT_DB = "chat.db"
MAILBOX_DB = "mailbox.db"
MAX_INBOX = 256  # messages shown since start, kept for `p2pnode inbox`
PUBLISH_ATTEMPTS = 40  # puts of a record at start while nobody holds it ...
PUBLISH_RETRY = 0.5  # ... this many seconds apart (then the hourly republish)


def parse_mailbox(text: str) -> MailboxEntry:
    """``PEERID@HOST:PORT`` (checked by the config) as a ``MailboxEntry``."""
    peer_id, _, address = text.partition("@")
    host, port = hostport(address)
    return MailboxEntry(public_key_from_peer_id(peer_id), host, port)


@dataclass(frozen=True)
class ConversationGap:
    """Event: messages from ``peer_id`` are held until the missing ones arrive."""

    peer_id: str
    expected_seq: int
    held_seq: int


@dataclass(frozen=True)
class InboxEntry:
    message: MessageRow
    request: bool  # from a stranger: no conversation shown until accepted


class Screen(Protocol):
    def __call__(self, peer_id: str, *, known: bool, text: str | None = None) -> Screening: ...


def _show_all(peer_id: str, *, known: bool, text: str | None = None) -> Screening:
    return Screening.SHOW


@dataclass(frozen=True)
class MailboxServerStatistics:
    address: tuple[str, int] | None


class MailboxServerService:
    """The mailbox server of a supernode (see the module docstring)."""

    name = "mailbox"

    def __init__(self, home: Path, identity: Identity, section: MailboxSection) -> None:
        self.home = home
        self.identity = identity
        self.section = section
        self.server: MailboxServer | None = None

    async def start(self) -> None:
        core = MailboxCore(self.identity.public_key, self.home / MAILBOX_DB)
        server = MailboxServer(core, time.time)
        host, port = hostport(self.section.listen)
        await server.start(host, port)
        self.server = server

    async def run(self) -> None:
        assert self.server is not None
        await self.server.run_expiry()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def statistics(self) -> MailboxServerStatistics:
        return MailboxServerStatistics(self.server.address if self.server else None)


async def _newest(
    dht: DhtService, kind: RecordKind, owner: bytes, subject: str
) -> SignedRecord | None:
    result = await dht.get(record_key(kind, owner, subject))
    mine = [r for r in result.records if r.owner == owner]
    return max(mine, key=lambda r: r.seq, default=None)


class ChatService:
    """One peer's messaging in the node (see the module docstring)."""

    name = "chat"

    def __init__(
        self,
        home: Path,
        identity: Identity,
        dht: DhtService,
        signalling: SignallingService,
        section: ChatSection,
        *,
        emit: Callable[[object], None],
    ) -> None:
        self.home = home
        self.identity = identity
        self.dht = dht
        self.signalling = signalling
        self.section = section
        self.emit = emit
        self.messaging: MessagingService | None = None
        self.inbox: collections.deque[InboxEntry] = collections.deque(maxlen=MAX_INBOX)
        self._channel: SignalChannel | None = None
        self.refused = 0
        self.blocked_dropped = 0
        self.attached = asyncio.Event()
        self.screen: Screen = _show_all  # the peer app's, once added
        self.blocked: Callable[[str], bool] = lambda peer_id: False
        self.is_contact: Callable[[str], bool] = lambda peer_id: True  # the peer app's
        self.reads_withheld = 0  # read marks refused: a stranger's or a blocked peer's

    def _on_event(self, event: MessagingEvent) -> None:
        if isinstance(event, MessageShown):
            peer_id = peer_id_for(event.message.peer)
            screening = self.screen(peer_id, known=not event.request, text=event.message.text)
            if screening is Screening.BLOCKED:
                self.blocked_dropped += 1
                return
            self.inbox.append(InboxEntry(event.message, screening is Screening.REQUEST))
        elif isinstance(event, GapDetected):
            peer_id = peer_id_for(event.peer)
            if self.blocked(peer_id):
                return
            self.emit(ConversationGap(peer_id, event.expected_seq, event.held_seq))
            return
        self.emit(event)

    async def _bundle(self, peer: bytes) -> PrekeyBundle | None:
        record = await _newest(self.dht, RecordKind.PREKEY_BUNDLE, peer, PREKEY_SUBJECT)
        if record is None:
            return None
        try:
            return bundle_from_record(record)
        except ValueError:
            return None

    async def _mailboxes(self, peer: bytes) -> tuple[MailboxEntry, ...]:
        record = await _newest(self.dht, RecordKind.MAILBOX_LIST, peer, MAILBOX_LIST_SUBJECT)
        if record is None:
            return ()
        try:
            return mailboxes_from_record(record)
        except ValueError:
            return ()

    async def _publish(self, record: SignedRecord) -> None:
        """Put until another node holds it: right after start the DHT may not have
        joined yet, and a bundle only we hold makes every sender fail."""
        for _ in range(PUBLISH_ATTEMPTS):
            result = await self.dht.put(record)
            if result.contacted > 0 and result.stored > 0:
                return
            await asyncio.sleep(PUBLISH_RETRY)
        logger.warning("chat record kind=%s not stored by any node yet", record.kind.name)

    async def start(self) -> None:
        if self._channel is None:  # a channel is opened once per signalling service
            self._channel = self.signalling.channel("chat")
        # X3DH's identity key IS our Ed25519 key (sessions/crypto.py): it needs the seed.
        # Identity has no public accessor for it yet (reported): the signing key's bytes.
        seed = bytes(self.identity._signing_key)
        policy = RetryPolicy(first=self.section.retry_first)
        self.messaging = MessagingService(
            self.identity,
            seed,
            self.home / CHAT_DB,
            MessagingConfig(
                tuple(parse_mailbox(m) for m in self.section.mailboxes),
                policy=policy,
                drain_every=self.section.drain_every,
            ),
            send_signal=online_sender(self._channel),
            resolve_bundle=self._bundle,
            resolve_mailboxes=self._mailboxes,
            clock=time.time,
            on_event=self._on_event,
            publish=self._publish,
            withhold_receipts=lambda peer: self.blocked(peer_id_for(peer)),
        )

    async def run(self) -> None:
        """Publish, register and drain, then pump the outbox and read the chat channel."""
        messaging = self.messaging
        assert messaging is not None and self._channel is not None
        await messaging.publish_records()
        drained = await messaging.attach()
        logger.info("chat attached drained=%d", drained)
        self.attached.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(messaging.run())
            while True:
                delivery = await self._channel.receive()
                try:
                    envelope = chat_envelope(delivery)
                except ChatSignalRefusedError:
                    self.refused += 1
                    continue
                if envelope is None:
                    continue
                if self.blocked(delivery.sender):  # declined: not even decrypted
                    self.blocked_dropped += 1
                    continue
                await messaging.deliver_online(envelope)

    async def stop(self) -> None:
        self.attached.clear()
        if self.messaging is not None:
            with contextlib.suppress(OSError):
                await self.messaging.close()
            self.messaging = None

    def statistics(self) -> MessagingStatistics | None:
        return self.messaging.statistics() if self.messaging is not None else None

    # -- for the control API -------------------------------------------------------------

    def _service(self) -> MessagingService:
        if self.messaging is None:
            raise RuntimeError("the chat service is not running")
        return self.messaging

    async def send(self, peer: bytes, text: str) -> bytes:
        return await self._service().send(peer, text)

    def status(self, message_id: bytes) -> MessageStatus:
        return self._service().status(message_id)

    async def read(self, peer: bytes, message_ids: tuple[bytes, ...]) -> bool:
        """Mark read and send read receipts, only for an accepted peer: a stranger learns
        "read" once the person accepts it, a blocked peer never; whether it was marked."""
        service = self._service()
        peer_id = peer_id_for(peer)
        accepted = self.is_contact(peer_id) or service.core.store.is_accepted(peer)
        if self.blocked(peer_id) or not accepted:
            self.reads_withheld += 1
            return False
        await service.read(peer, message_ids)
        return True

    def history(self, peer: bytes, limit: int) -> list[MessageRow]:
        return self._service().core.store.history(peer, limit=limit)

    def unread(self) -> dict[bytes, int]:
        return self._service().core.unread()


def add_chat_services(
    home: Path,
    config: NodeConfig,
    identity: Identity,
    dht: DhtService,
    signalling: SignallingService | None,
    add: Callable[[Service], None],
    emit: Callable[[object], None],
) -> ChatService | None:
    """The mailbox server (``[mailbox] serve``) and the chat service (``[chat] enabled``,
    which needs the signalling of ``[presence]``)."""
    mailbox = config.mailbox
    assert isinstance(mailbox, MailboxSection)
    if mailbox.serve:
        add(MailboxServerService(home, identity, mailbox))
    chat = config.chat
    assert isinstance(chat, ChatSection)
    if chat.enabled:
        if signalling is None:
            raise ValueError("[chat] needs [presence] enabled (the online path)")
        service = ChatService(home, identity, dht, signalling, chat, emit=emit)
        add(service)
        return service
    return None

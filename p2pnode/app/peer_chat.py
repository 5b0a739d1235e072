"""Messaging in the running node: the chat service (the mailbox server of supernodes,
``[mailbox] serve``, is ``mailbox_server``; ``add_chat_services`` adds both).

``[chat] enabled``: a ``MessagingService`` whose online
path is the signalling's "chat" channel, whose prekey bundle and mailbox list are
signed records in the DHT, and whose store is ``<home>/chat.db``. On start it
publishes both records, registers at its mailboxes and drains them (messages
that waited while the node was stopped are shown then, and their receipts go
back); then it runs the outbox pump and reads the chat channel.

Mailboxes found in the network: a mailbox server that knows its public IP
publishes a signed offer (``mailbox_list.mailbox_offer_record``) at start and
hourly. A peer whose ``[chat] mailboxes`` names fewer than three fills up to
three itself: candidates are the supernodes it knows (``[presence] homes``, the
homes it is attached to, the relay search's healthy supernodes), each mapped to
its offer, kept if it accepts a TCP connection. Config-named mailboxes come
first and are never replaced; the chosen ones and the former ones still drained
are kept in ``<home>/mailboxes.json`` (rewritten on every change), so the list
is stable across restarts and a replaced mailbox is still drained after one.
The app checks its current mailboxes itself (a TCP connection, every
``MAILBOX_CHECK_EVERY`` seconds and after every change) and announces the list
with each one's state (``MailboxesChanged``, on the WebSocket) whenever the list
or a reachability changes: the messaging service's own health record only
replaces a mailbox after a day, and a person wants to see the outage before.

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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from p2pnode.app.config import NodeConfig
from p2pnode.app.mailbox_server import (
    MAILBOX_DB,
    MailboxServerService,
    MailboxServerStatistics,
    publish_until_stored,
)
from p2pnode.app.mailbox_state import (
    MAILBOXES_FILE,
    MailboxState,
    MailboxView,
    load_mailbox_state,
    mailbox_view,
    parse_mailbox,
    save_mailbox_state,
)
from p2pnode.app.peer_config import ChatSection, MailboxSection, PresenceSection
from p2pnode.app.peer_contacts import Screening
from p2pnode.app.service import Service
from p2pnode.app.services import DhtService
from p2pnode.connectivity.relays import RelayFinder
from p2pnode.connectivity.signalling import SignalChannel, SignallingService
from p2pnode.identity import Identity, peer_id_for, public_key_from_peer_id
from p2pnode.records import RecordKind, SignedRecord, record_key
from p2pnode.sessions.chat import MessageStatus
from p2pnode.sessions.chat_signal import ChatSignalRefusedError, chat_envelope, online_sender
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox_choice import FORMER_KEPT
from p2pnode.sessions.mailbox_list import (
    MAILBOX_LIST_SUBJECT,
    MAILBOX_OFFER_SUBJECT,
    MAX_MAILBOXES,
    MIN_MAILBOXES,
    MailboxEntry,
    mailboxes_from_record,
    offer_from_record,
)
from p2pnode.sessions.messaging import (
    GapDetected,
    MessageShown,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
    MessagingStatistics,
)
from p2pnode.sessions.messaging import MailboxesChanged as MailboxListChanged
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
    "MailboxServerService",  # re-exported: it lived here first (now mailbox_server)
    "MailboxServerStatistics",
    "MailboxesChanged",
    "Screen",
    "add_chat_services",
    "parse_mailbox",  # re-exported: it lived here first
    "publish_until_stored",
]

logger = logging.getLogger(__name__)

CHAT_DB = "chat.db"
MAX_INBOX = 256  # messages shown since start, kept for `p2pnode inbox`
MAX_CANDIDATE_KEYS = 16  # supernodes asked for a mailbox offer per search
PROBE_TIMEOUT = 2.0  # seconds for a candidate mailbox to accept a TCP connection
MAILBOX_CHECK_EVERY = 60.0  # seconds between two checks of our own mailboxes


@dataclass(frozen=True)
class ConversationGap:
    """Event: messages from ``peer_id`` are held until the missing ones arrive."""

    peer_id: str
    expected_seq: int
    held_seq: int


@dataclass(frozen=True)
class MailboxesChanged:
    """Event: our mailbox list or a mailbox's reachability changed (the whole list now,
    pinned ones first, as ``GET /api/mailboxes`` answers it)."""

    mailboxes: tuple[MailboxView, ...]


@dataclass(frozen=True)
class InboxEntry:
    message: MessageRow
    request: bool  # from a stranger: no conversation shown until accepted


class Screen(Protocol):
    def __call__(self, peer_id: str, *, known: bool, text: str | None = None) -> Screening: ...


def _show_all(peer_id: str, *, known: bool, text: str | None = None) -> Screening:
    return Screening.SHOW


async def _newest(
    dht: DhtService, kind: RecordKind, owner: bytes, subject: str
) -> SignedRecord | None:
    result = await dht.get(record_key(kind, owner, subject))
    mine = [r for r in result.records if r.owner == owner]
    return max(mine, key=lambda r: r.seq, default=None)


@dataclass(frozen=True)
class MailboxConfigPart:
    """Our mailboxes at start: the named ones, and the former ones with their ends."""

    mailboxes: tuple[MailboxEntry, ...]
    former: tuple[tuple[MailboxEntry, float], ...]


async def _accepts(entry: MailboxEntry) -> bool:
    """Whether the mailbox accepts a TCP connection now (a dead offer is not picked)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(entry.host, entry.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


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
        self.relays: RelayFinder | None = None  # the relay search's, once added
        self.home_keys: tuple[bytes, ...] = ()  # [presence] homes: mailbox candidates too
        self.pinned = tuple(parse_mailbox(m) for m in section.mailboxes)
        self._since: dict[bytes, float] = {}  # current mailboxes: when they joined our list
        self._checked: dict[bytes, tuple[bool, float]] = {}  # last check: reachable, when
        self._recheck = asyncio.Event()
        self._announced: tuple[MailboxView, ...] | None = None

    def _on_event(self, event: MessagingEvent) -> None:
        if isinstance(event, MessageShown):
            peer_id = peer_id_for(event.message.peer)
            screening = self.screen(peer_id, known=not event.request, text=event.message.text)
            if screening is Screening.BLOCKED:
                self.blocked_dropped += 1
                return
            self.inbox.append(InboxEntry(event.message, screening is Screening.REQUEST))
        elif isinstance(event, MailboxListChanged):
            now = time.time()
            self._since = {m.key: self._since.get(m.key, now) for m in event.mailboxes}
            self._save_mailboxes(event)
            self._announce()
            self._recheck.set()  # the new ones are checked at once
            return
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
        """Put until another node holds it (a bundle only we hold makes senders fail)."""
        await publish_until_stored(self.dht, record)

    def _save_mailboxes(self, event: MailboxListChanged) -> None:
        pinned = {m.key for m in self.pinned}
        chosen = tuple(m for m in event.mailboxes if m.key not in pinned)
        former = tuple((m, None if math.isinf(t) else t) for m, t in event.former)
        logger.info(
            "chat mailboxes now %s",
            " ".join(peer_id_for(m.key)[:8] for m in event.mailboxes),
        )
        since = tuple((m, self._since[m.key]) for m in event.mailboxes if m.key in self._since)
        try:
            save_mailbox_state(self.home / MAILBOXES_FILE, MailboxState(chosen, former, since))
        except OSError as error:
            logger.warning("cannot save %s: %s", MAILBOXES_FILE, error.strerror)

    async def _find_mailboxes(self) -> tuple[MailboxEntry, ...]:
        """Mailbox supernodes we can reach: the offers of the supernodes we know."""
        keys = dict.fromkeys(self.home_keys)
        keys.update(dict.fromkeys(home.key for home in self.signalling.homes()))
        if self.relays is not None:
            healthy = self.relays.selector.healthy(MAX_CANDIDATE_KEYS)
            keys.update(dict.fromkeys(c.owner for c in healthy))
        keys.pop(self.identity.public_key, None)
        asked = list(keys)[:MAX_CANDIDATE_KEYS]
        offers = await asyncio.gather(*(self._offer(key) for key in asked))
        found = [offer for offer in offers if offer is not None]
        alive = await asyncio.gather(*(_accepts(entry) for entry in found))
        return tuple(entry for entry, ok in zip(found, alive, strict=True) if ok)

    async def _offer(self, key: bytes) -> MailboxEntry | None:
        try:
            record = await _newest(self.dht, RecordKind.MAILBOX_LIST, key, MAILBOX_OFFER_SUBJECT)
        except (OSError, TimeoutError):
            return None
        if record is None or record.expires_at <= time.time():
            return None
        try:
            return offer_from_record(record)
        except ValueError:
            return None

    def _initial_mailboxes(self) -> tuple[MailboxConfigPart, bool]:
        """Our mailboxes at start (config ones first, then the saved choice) and whether
        we look for more (only while the config names fewer than ``MIN_MAILBOXES``)."""
        state = load_mailbox_state(self.home / MAILBOXES_FILE)
        pinned = self.pinned
        searching = len(pinned) < MIN_MAILBOXES
        keys = {m.key for m in pinned}
        chosen = tuple(m for m in state.chosen if m.key not in keys) if searching else ()
        current = (pinned + chosen)[:MAX_MAILBOXES]
        named = {m.key for m in current}
        saved_since = {m.key: when for m, when in state.since}
        now = time.time()
        self._since = {m.key: saved_since.get(m.key, now) for m in current}
        until = time.time() + FORMER_KEPT  # no longer named: drained for its retention
        dropped = [(m, until) for m in state.chosen if m.key not in named]
        former = dropped + [(m, math.inf if t is None else t) for m, t in state.former]
        unique = {m.key: (m, t) for m, t in former if m.key not in named}
        new = any(m.key not in saved_since for m in current)  # its "since" starts today
        if dropped or new:  # saved now, so retention and "since" run from today, not each start
            ends = tuple((m, None if math.isinf(t) else t) for m, t in unique.values())
            with contextlib.suppress(OSError):
                kept = tuple(m for m in current if m.key not in keys)
                since = tuple((m, self._since[m.key]) for m in current)
                save_mailbox_state(self.home / MAILBOXES_FILE, MailboxState(kept, ends, since))
        return MailboxConfigPart(current, tuple(unique.values())), searching

    async def start(self) -> None:
        if self._channel is None:  # a channel is opened once per signalling service
            self._channel = self.signalling.channel("chat")
        # X3DH's identity key IS our Ed25519 key (sessions/crypto.py): it needs the seed.
        seed = self.identity.secret_seed()
        policy = RetryPolicy(first=self.section.retry_first)
        initial, searching = self._initial_mailboxes()
        self.messaging = MessagingService(
            self.identity,
            seed,
            self.home / CHAT_DB,
            MessagingConfig(
                initial.mailboxes,
                former_mailboxes=tuple(m for m, _ in initial.former),
                former_until=tuple(t for _, t in initial.former),
                policy=policy,
                drain_every=self.section.drain_every,
                pinned=self.pinned,
            ),
            send_signal=online_sender(self._channel),
            resolve_bundle=self._bundle,
            resolve_mailboxes=self._mailboxes,
            clock=time.time,
            on_event=self._on_event,
            publish=self._publish,
            withhold_receipts=lambda peer: self.blocked(peer_id_for(peer)),
            find_mailboxes=self._find_mailboxes if searching else None,
        )

    async def run(self) -> None:
        """Publish, register and drain, then pump the outbox and read the chat channel."""
        messaging = self.messaging
        assert messaging is not None and self._channel is not None
        await messaging.refresh_mailboxes()  # short of mailboxes: fill from the network
        await messaging.publish_records()
        drained = await messaging.attach()
        logger.info("chat attached drained=%d", drained)
        self.attached.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(messaging.run())
            tasks.create_task(self._check_mailboxes(messaging))
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

    async def _check_mailboxes(self, messaging: MessagingService) -> None:
        """Check our current mailboxes every ``MAILBOX_CHECK_EVERY`` seconds (or when
        asked: a change, ``recheck_mailboxes``); announce what changed."""
        while True:
            self._recheck.clear()
            current = messaging.mailboxes
            results = await asyncio.gather(*(_accepts(entry) for entry in current))
            now = time.time()
            self._checked = {
                entry.key: (ok, now) for entry, ok in zip(current, results, strict=True)
            }
            self._announce()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MAILBOX_CHECK_EVERY):
                    await self._recheck.wait()

    def recheck_mailboxes(self) -> None:
        """Check our mailboxes now (the API's ``POST /api/mailboxes/check``)."""
        self._recheck.set()

    def mailbox_views(self) -> tuple[MailboxView, ...]:
        """Our current mailboxes, pinned ones first, with when they joined and their
        last check (empty while the service is not running)."""
        if self.messaging is None:
            return ()
        pinned = {m.key for m in self.pinned}
        now = time.time()
        return tuple(
            mailbox_view(entry, entry.key in pinned, self._since.get(entry.key, now), self._checked)
            for entry in self.messaging.mailboxes
        )

    def former_mailboxes(self) -> tuple[tuple[MailboxEntry, float], ...]:
        """Mailboxes no longer named but still drained, each with its end of draining."""
        return self.messaging.former_mailboxes if self.messaging is not None else ()

    def _announce(self) -> None:
        """Emit ``MailboxesChanged`` when the list or a reachability differs from the last
        announcement (a new check time alone is not news)."""
        views = self.mailbox_views()
        essence = tuple((v.peer_id, v.address, v.reachable) for v in views)
        if self._announced is not None and essence == tuple(
            (v.peer_id, v.address, v.reachable) for v in self._announced
        ):
            return
        self._announced = views
        self.emit(MailboxesChanged(views))

    async def stop(self) -> None:
        self.attached.clear()
        self._announced = None
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

    async def read(self, peer: bytes, message_ids: tuple[bytes, ...]) -> int:
        """Mark read and send read receipts, only for an accepted peer: a stranger learns
        "read" once the person accepts it, a blocked peer never; how many were newly
        marked (unknown ids, another peer's and those marked already are not)."""
        service = self._service()
        peer_id = peer_id_for(peer)
        accepted = self.is_contact(peer_id) or service.core.store.is_accepted(peer)
        if self.blocked(peer_id) or not accepted:
            self.reads_withheld += 1
            return 0
        return await service.read(peer, message_ids)

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
    presence = config.presence
    assert isinstance(presence, PresenceSection)
    if mailbox.serve:
        public_ip = config.supernode.public_ip or presence.advertise
        add(MailboxServerService(home, identity, mailbox, dht=dht, public_ip=public_ip))
    chat = config.chat
    assert isinstance(chat, ChatSection)
    if chat.enabled:
        if signalling is None:
            raise ValueError("[chat] needs [presence] enabled (the online path)")
        service = ChatService(home, identity, dht, signalling, chat, emit=emit)
        service.home_keys = tuple(public_key_from_peer_id(p) for p in presence.homes)
        add(service)
        return service
    return None

"""Mailbox servers on loopback and an in-memory record board, for messaging tests.

The board stands in for the DHT: what a MessagingService publishes (its prekey
bundle, its mailbox list) is what the others resolve. Nobody is reachable
online (``offline``), so every message goes by the mailboxes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2pnode.identity import Identity
from p2pnode.records.codec import SignedRecord
from p2pnode.records.kinds import RecordKind
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MailboxEntry, mailboxes_from_record
from p2pnode.sessions.mailbox_service import MailboxServer
from p2pnode.sessions.messaging import (
    FindMailboxes,
    MessageShown,
    MessagingConfig,
    MessagingEvent,
    MessagingService,
)
from p2pnode.sessions.one_time_prekeys import TakeLimits
from p2pnode.sessions.prekeys import bundle_from_record

__all__ = ["OfflineServices", "RecordBoard", "ShownTexts", "offline", "start_mailboxes"]


@dataclass(frozen=True)
class RecordBoard:
    """The latest record of each (owner, kind) published; pass its methods to the services."""

    records: dict[tuple[bytes, RecordKind], SignedRecord] = field(default_factory=dict)

    async def publish(self, record: SignedRecord) -> None:
        self.records[(record.owner, record.kind)] = record

    async def resolve_bundle(self, peer: bytes) -> PrekeyBundle | None:
        record = self.records.get((peer, RecordKind.PREKEY_BUNDLE))
        return None if record is None else bundle_from_record(record)

    async def resolve_mailboxes(self, peer: bytes) -> tuple[MailboxEntry, ...]:
        record = self.records.get((peer, RecordKind.MAILBOX_LIST))
        return () if record is None else mailboxes_from_record(record)


class ShownTexts(list[str]):
    """The text of every message shown, in order; ``on_event`` is the services' listener."""

    def on_event(self, event: MessagingEvent) -> None:
        if isinstance(event, MessageShown):
            self.append(event.message.text)


async def offline(peer: bytes, payload: bytes) -> bool:
    """No peer is online: the services deposit every message at a mailbox."""
    return False


@dataclass(frozen=True)
class OfflineServices:
    """MessagingServices that share one board, one clock and one list of shown texts."""

    tmp: Path
    clock: Callable[[], float]
    board: RecordBoard = field(default_factory=RecordBoard)
    shown: ShownTexts = field(default_factory=ShownTexts)

    def service(
        self,
        seed: bytes,
        name: str,
        config: MessagingConfig,
        find_mailboxes: FindMailboxes | None = None,
    ) -> MessagingService:
        """The identity of ``seed``, its store ``<name>.db``, reachable only by mailbox."""
        return MessagingService(
            Identity.generate(seed),
            seed,
            self.tmp / f"{name}.db",
            config,
            send_signal=offline,
            resolve_bundle=self.board.resolve_bundle,
            resolve_mailboxes=self.board.resolve_mailboxes,
            clock=self.clock,
            on_event=self.shown.on_event,
            publish=self.board.publish,
            find_mailboxes=find_mailboxes,
        )


async def start_mailboxes(
    tmp: Path,
    keys: Sequence[Identity],
    clock: Callable[[], float],
    take_limits: TakeLimits | None = None,
) -> tuple[list[MailboxServer], tuple[MailboxEntry, ...]]:
    """One server a key on 127.0.0.1 (port 0, database ``m<index>.db``) and its entries."""
    servers: list[MailboxServer] = []
    for index, key in enumerate(keys):
        core = MailboxCore(key.public_key, tmp / f"m{index}.db", take_limits=take_limits)
        server = MailboxServer(core, clock)
        await server.start("127.0.0.1", 0)
        servers.append(server)
    entries = tuple(
        MailboxEntry(k.public_key, "127.0.0.1", s.address[1])
        for k, s in zip(keys, servers, strict=True)
    )
    return servers, entries

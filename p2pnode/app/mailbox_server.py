"""The mailbox server of a supernode in the running node (``[mailbox] serve``).

A ``MailboxServer`` on TCP whose SQLite file (``MAILBOX_DB``) lives in the home,
so held mail survives restarts. A server that knows its public address (``[mailbox]
advertise``, the bound IP, else the node's public IP) publishes a signed offer
(``mailbox_list.mailbox_offer_record``) at start and every ``OFFER_EVERY`` seconds:
that is how peers whose ``[chat] mailboxes`` names fewer than three find one
(``peer_chat``). Split out of ``peer_chat`` (the chat service): the server holds
other peers' mail, the chat service our own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from p2pnode.app.config import hostport
from p2pnode.app.peer_config import MailboxSection
from p2pnode.app.services import DhtService
from p2pnode.identity import Identity
from p2pnode.records import SignedRecord
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import mailbox_offer_record
from p2pnode.sessions.mailbox_service import MailboxServer

__all__ = [
    "MAILBOX_DB",
    "OFFER_EVERY",
    "MailboxServerService",
    "MailboxServerStatistics",
    "publish_until_stored",
]

logger = logging.getLogger(__name__)

MAILBOX_DB = "mailbox.db"
PUBLISH_ATTEMPTS = 40  # puts of a record at start while nobody holds it ...
PUBLISH_RETRY = 0.5  # ... this many seconds apart (then the hourly republish)
OFFER_EVERY = 3600.0  # seconds between two puts of our mailbox offer


async def publish_until_stored(dht: DhtService, record: SignedRecord) -> bool:
    """Put until another node holds it: right after start the DHT may not have joined
    yet, and a record only we hold helps nobody. Whether some node stored it."""
    for _ in range(PUBLISH_ATTEMPTS):
        result = await dht.put(record)
        if result.contacted > 0 and result.stored > 0:
            return True
        await asyncio.sleep(PUBLISH_RETRY)
    logger.warning("record kind=%s not stored by any node yet", record.kind.name)
    return False


@dataclass(frozen=True)
class MailboxServerStatistics:
    address: tuple[str, int] | None


class MailboxServerService:
    """The mailbox server of a supernode (see the module docstring)."""

    name = "mailbox"

    def __init__(
        self,
        home: Path,
        identity: Identity,
        section: MailboxSection,
        *,
        dht: DhtService | None = None,
        public_ip: str | None = None,
    ) -> None:
        self.home = home
        self.identity = identity
        self.section = section
        self.dht = dht
        self.public_ip = public_ip  # the node's, offered when listening on a wildcard
        self.server: MailboxServer | None = None
        self.offers_published = 0

    def offer_address(self) -> tuple[str, int] | None:
        """Where peers reach us: ``[mailbox] advertise``, else the bound IP, else the
        node's public IP (None: unknown, so no offer)."""
        if self.server is None:
            return None
        host, port = self.server.address
        if self.section.advertise is not None:
            host = self.section.advertise
        elif ipaddress.ip_address(host).is_unspecified:
            if self.public_ip is None:
                return None
            host = self.public_ip
        return str(ipaddress.ip_address(host)), port

    async def start(self) -> None:
        core = MailboxCore(self.identity.public_key, self.home / MAILBOX_DB)
        server = MailboxServer(core, time.time)
        host, port = hostport(self.section.listen)
        await server.start(host, port)
        self.server = server

    async def run(self) -> None:
        assert self.server is not None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.server.run_expiry())
            tasks.create_task(self._offer())

    async def _offer(self) -> None:
        """Publish our signed mailbox offer at start and every ``OFFER_EVERY`` seconds."""
        address = self.offer_address()
        if self.dht is None or address is None:
            logger.info("mailbox: no public address known, no offer published")
            return
        while True:
            record = mailbox_offer_record(self.identity, *address, now=time.time())
            if await publish_until_stored(self.dht, record):
                self.offers_published += 1
            await asyncio.sleep(OFFER_EVERY)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def statistics(self) -> MailboxServerStatistics:
        return MailboxServerStatistics(self.server.address if self.server else None)

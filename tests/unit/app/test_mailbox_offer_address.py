"""Which address a mailbox server offers: ``[mailbox] advertise``, else the bound IP,
else the node's public IP; on a wildcard with none known, no offer at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

from p2pnode.app.peer_chat import MailboxServerService
from p2pnode.app.peer_config import MailboxSection
from p2pnode.identity import Identity

IDENTITY = Identity.generate(bytes([3]) * 32)


def offered(home: Path, section: MailboxSection, public_ip: str | None) -> tuple[str, int] | None:
    async def scenario() -> tuple[str, int] | None:
        service = MailboxServerService(home, IDENTITY, section, public_ip=public_ip)
        await service.start()
        try:
            assert service.server is not None
            address = service.offer_address()
            assert address is None or address[1] == service.server.address[1]
            return address
        finally:
            await service.stop()

    return asyncio.run(scenario())


def test_bound_ip_then_advertised(tmp_path: Path) -> None:
    bound = MailboxSection.model_validate({"serve": True, "listen": "127.0.0.1:0"})
    address = offered(tmp_path, bound, "198.51.100.1")
    assert address is not None and address[0] == "127.0.0.1"
    told = MailboxSection.model_validate(
        {"serve": True, "listen": "127.0.0.1:0", "advertise": "203.0.113.5"}
    )
    address = offered(tmp_path, told, "198.51.100.1")
    assert address is not None and address[0] == "203.0.113.5"


def test_not_started_offers_nothing(tmp_path: Path) -> None:
    section = MailboxSection.model_validate({"serve": True})
    service = MailboxServerService(tmp_path, IDENTITY, section)
    assert service.offer_address() is None

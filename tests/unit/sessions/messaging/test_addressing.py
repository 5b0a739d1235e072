"""Recipients by peer id, alias, then login; an unknown name is an error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2pnode.identity import Identity
from p2pnode.sessions.addressing import RecipientNotFoundError, resolve_recipient
from p2pnode.sessions.store import ChatStore

ALICE, BOB, CAROL = (Identity.generate(bytes([i]) * 32) for i in (1, 2, 3))


def test_peer_id_then_alias_then_login(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "s.db")
    with store.transaction():
        store.add_contact(BOB.public_key, "bob", True, 0)
    asked: list[str] = []

    async def logins(name: str) -> bytes | None:
        asked.append(name)
        return CAROL.public_key if name == "carol@example" else None

    async def run() -> None:
        assert await resolve_recipient(ALICE.peer_id, store, logins) == ALICE.public_key
        assert await resolve_recipient("bob", store, logins) == BOB.public_key
        assert await resolve_recipient("carol@example", store, logins) == CAROL.public_key
        with pytest.raises(RecipientNotFoundError):
            await resolve_recipient("nobody", store, logins)

    asyncio.run(run())
    assert asked == ["carol@example", "nobody"]  # peer ids and aliases never hit the directory

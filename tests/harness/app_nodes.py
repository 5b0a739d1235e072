"""Helpers over a running node (``runtime.Assembly``) for the app and web tests.

``ControlApi`` calls a node's control API as its owner (the bearer token the
node wrote in its home) and insists on 200; ``mailbox_entry`` names a node that
serves a mailbox the way a ``[chat] mailboxes`` list does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from p2pnode.app.homefiles import TOKEN_FILE
from p2pnode.app.mailbox_server import MailboxServerService
from p2pnode.app.runtime import Assembly

__all__ = ["ControlApi", "mailbox_entry"]


class ControlApi:
    """A node's control API with its owner's token."""

    def __init__(self, session: aiohttp.ClientSession, node: Assembly, token: str) -> None:
        assert node.control is not None
        self.session = session
        self.url = node.control.url
        self.token = token
        self.auth = {"Authorization": f"Bearer {token}"}

    @classmethod
    def at(cls, session: aiohttp.ClientSession, home: Path, node: Assembly) -> ControlApi:
        """The API of ``node`` running in ``home``, with the token it wrote there."""
        return cls(session, node, (home / TOKEN_FILE).read_text().strip())

    async def call(self, method: str, path: str, body: object = None) -> Any:
        """The JSON answer of ``method path`` (with ``body`` as JSON); it must be 200."""
        async with self.session.request(
            method, f"{self.url}{path}", json=body, headers=self.auth
        ) as answer:
            assert answer.status == 200, await answer.text()
            return await answer.json()


def mailbox_entry(node: Assembly) -> str:
    """``peer_id@127.0.0.1:port`` of the mailbox ``node`` serves."""
    service = node.node.service("mailbox")
    assert isinstance(service, MailboxServerService) and service.server is not None
    return f"{node.identity.peer_id}@127.0.0.1:{service.server.address[1]}"

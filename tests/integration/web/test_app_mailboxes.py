"""Our mailboxes in the control API, on the WebSocket and on the Status view; read counts.

home1 serves as a home and a mailbox, mb2 is a second mailbox server (no presence);
alice (app, chat) names both in ``[chat] mailboxes``; bob (chat, no page) writes to
her as a stranger.

- ``GET /api/mailboxes`` lists both supernodes (peer id, address, named in the
  config, since alice's start) and, once alice's node checked them, reachable; her
  Status view shows the same rows.
- mb2's node stops; a check (``POST /api/mailboxes/check``) pushes
  ``MailboxesChanged`` with mb2 unreachable on the WebSocket, and the open page turns
  that row unreachable without a reload.
- ``POST /api/read`` answers the number actually marked: 0 for a stranger's text
  (withheld until accepted), 0 for unknown ids; once bob is accepted, his two texts
  plus an unknown id give 2, and the same request again 0.
- alice's node restarts: each mailbox's ``since`` is the one before (kept in
  ``mailboxes.json``), and mb2 is still listed, unreachable.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness.app_nodes import ControlApi, mailbox_entry
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import (
    ARTIFACTS,
    WAIT,
    WAIT_MS,
    Lab,
    _config,
    chat_of,
    one_time_link,
    running_lab,
)

pytestmark = pytest.mark.slow


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    async with running_lab(root) as lab:
        home = await lab.start_home(mailbox=True)
        host, port = home.dht.address
        bootstrap = f"{host}:{port}"
        mb2 = await lab.start(
            "mb2",
            {
                "node": {"listen": "127.0.0.1:0", "bootstrap": [bootstrap]},
                "supernode": {"enabled": False, "relay_search": False},
                "control": {"port": 0},
                "mailbox": {"serve": True, "listen": "127.0.0.1:0"},
            },
        )
        attach = {"homes": [home.identity.peer_id], "home": "attach"}
        for name, boxes, web in (
            ("alice", [mailbox_entry(home), mailbox_entry(mb2)], True),
            ("bob", [mailbox_entry(home)], False),
        ):
            peer = _config(bootstrap, attach, web=web)
            peer["chat"] = {"enabled": True, "mailboxes": boxes, "retry_first": 0.5}
            await lab.start_peer(name, peer)
        yield lab


async def mailboxes_checked(api: ControlApi) -> list[dict[str, Any]]:
    async with asyncio.timeout(WAIT):
        while True:
            answer = await api.call("GET", "/api/mailboxes")
            boxes: list[dict[str, Any]] = answer["mailboxes"]
            if boxes and all(m["reachable"] is not None for m in boxes):
                return boxes
            await asyncio.sleep(0.1)


async def mailbox_event(events: aiohttp.ClientWebSocketResponse, peer_id: str) -> dict[str, Any]:
    """The first ``MailboxesChanged`` saying ``peer_id`` is unreachable."""
    async with asyncio.timeout(WAIT):
        while True:
            event: dict[str, Any] = await events.receive_json()
            if event["type"] != "MailboxesChanged":
                continue
            states = {m["peer_id"]: m["reachable"] for m in event["mailboxes"]}
            if states.get(peer_id) is False:
                return event


async def inbox_ids(api: ControlApi, peer_id: str, count: int) -> list[str]:
    async with asyncio.timeout(WAIT):
        while True:
            inbox = await api.call("GET", "/api/inbox")
            ids = [m["message_id"] for m in inbox["messages"] if m["peer_id"] == peer_id]
            if len(ids) >= count:
                return ids
            await asyncio.sleep(0.1)


async def scenario(root: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    async with (
        network(root) as lab,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        home, mb2, alice, bob = (lab.nodes[n] for n in ("home1", "mb2", "alice", "bob"))
        api = ControlApi.at(session, root / "alice", alice)
        boxes = await mailboxes_checked(api)
        assert [m["peer_id"] for m in boxes] == [home.identity.peer_id, mb2.identity.peer_id]
        assert [m["address"] for m in boxes] == [
            mailbox_entry(n).partition("@")[2] for n in (home, mb2)
        ]
        assert all(m["pinned"] and m["reachable"] for m in boxes)
        assert all(started <= m["since"] <= m["checked_at"] <= time.time() for m in boxes)

        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await (await browser.new_context()).new_page()
        await page.goto(await one_time_link(session, root / "alice"))
        await page.click("#nav-status")
        row = page.locator(f'#mailboxes tr[data-peer="{mb2.identity.peer_id}"]')
        await expect(row).to_contain_text("reachable (checked", timeout=WAIT_MS)
        await expect(row).to_contain_text("named in the config")
        await expect(page.locator("#mailboxes tbody tr")).to_have_count(2)

        async with session.ws_connect(f"{api.url}/api/events?token={api.token}") as events:
            await lab.stop("mb2")
            await api.call("POST", "/api/mailboxes/check")
            event = await mailbox_event(events, mb2.identity.peer_id)
        states = {m["peer_id"]: m["reachable"] for m in event["mailboxes"]}
        assert states == {home.identity.peer_id: True, mb2.identity.peer_id: False}
        await expect(row).to_have_attribute("data-reachable", "false", timeout=WAIT_MS)
        await expect(row).to_contain_text("unreachable")
        await page.screenshot(path=ARTIFACTS / "status-mailboxes.png", full_page=True)
        await browser.close()

        # read counts: what was marked, not what was asked
        bob_id = bob.identity.peer_id
        bob_chat = chat_of(bob)
        await bob_chat.send(alice.identity.public_key, "hello from a stranger")
        first = await inbox_ids(api, bob_id, 1)
        unknown = secrets.token_hex(16)
        stranger = await api.call("POST", "/api/read", {"peer": bob_id, "message_ids": first})
        assert stranger["marked"] == 0  # withheld until accepted
        nothing = await api.call("POST", "/api/read", {"peer": bob_id, "message_ids": [unknown]})
        assert nothing["marked"] == 0
        await api.call("POST", f"/api/contacts/requests/{bob_id}/accept", {"name": "bob"})
        await bob_chat.send(alice.identity.public_key, "now a contact")
        both = await inbox_ids(api, bob_id, 2)
        asked = {"peer": bob_id, "message_ids": [*both, unknown]}
        assert (await api.call("POST", "/api/read", asked))["marked"] == 2
        assert (await api.call("POST", "/api/read", asked))["marked"] == 0  # marked already
        assert (await api.call("GET", "/api/unread"))["conversations"] == []

        # a restart keeps when each mailbox joined (mailboxes.json), not the restart's time
        await lab.stop("alice")
        alice = await lab.start_peer("alice", lab.configs["alice"])
        api = ControlApi.at(session, root / "alice", alice)
        again = await mailboxes_checked(api)
        assert [(m["peer_id"], m["since"]) for m in again] == [
            (m["peer_id"], m["since"]) for m in boxes
        ]
        assert [m["reachable"] for m in again] == [True, False]  # mb2 is still stopped


def test_mailboxes_in_api_websocket_and_status_view_and_true_read_counts(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path, require_tool("chromium")))

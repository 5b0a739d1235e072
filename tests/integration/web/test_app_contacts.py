"""Contact requests and reach settings in the app, end to end on loopback (Chromium).

One serving home (also a mailbox); alice with the app; two strangers without pages,
carol (chat and calls) and dave (chat), driven through their own nodes' services.

- carol watches alice (everyone may) and writes: alice's open Contacts view shows the
  request at once (event stream), with the text; no conversation is offered for it.
- alice's Settings: presence for contacts only, strangers' calls wait as requests;
  carol's node sees alice go offline (the home drops its watch); the settings are in
  alice's home; carol's call does not ring (it waits as "requested") and is counted
  on her request.
- alice accepts carol: a contact with a conversation holding the earlier text and an
  unread badge that survives a page reload (the node keeps it); opening it marks it
  read and carol's node gets the read receipt.
- alice adds carol by phone number: her ENUM record is countersigned by the verifier
  alice's node trusts; dave's number, claimed without a verifier, is refused.
- dave writes, alice declines: dave's next text is dropped (no request, not in the inbox);
  alice unblocks him and his next text is a request again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.app.peer_calls import CallsNodeService, media_for
from p2pnode.app.peer_contacts import SETTINGS_FILE
from p2pnode.app.peer_services import PeerApp
from p2pnode.app.services import directory_of
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.verifiers import countersign
from p2pnode.identity import Identity, public_key_from_peer_id
from p2pnode.records import RecordKind
from p2pnode.sessions.call import CallState
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import (
    ARTIFACTS,
    WAIT,
    WAIT_MS,
    Lab,
    _config,
    chat_of,
    one_time_link,
)

pytestmark = pytest.mark.slow

CAROL_NUMBER = "+442079460019"  # verified by the registrar alice trusts
DAVE_NUMBER = "+442079460020"  # claimed by dave alone


def peer_app(lab: Lab, name: str) -> PeerApp:
    service = lab.nodes[name].node.service("peer")
    assert isinstance(service, PeerApp)
    return service


def calls_of(lab: Lab, name: str) -> CallsNodeService:
    service = lab.nodes[name].node.service("calls")
    assert isinstance(service, CallsNodeService)
    return service


@asynccontextmanager
async def network(root: Path, verifier: Identity) -> AsyncIterator[Lab]:
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            config = _config(None, {"home": "serve"}, web=False)
            config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
            home = await lab.start("home1", config)
            host, port = home.dht.address
            mailbox = home.node.service("mailbox")
            address = mailbox.server.address  # type: ignore[attr-defined]
            entry = f"{home.identity.peer_id}@127.0.0.1:{address[1]}"
            attach = {"homes": [home.identity.peer_id], "home": "attach"}
            for name in ("alice", "carol", "dave"):
                peer: dict[str, Any] = _config(f"{host}:{port}", attach, web=name == "alice")
                peer["chat"] = {
                    "enabled": True, "mailboxes": [entry], "retry_first": 0.5, "drain_every": 1.0,
                }  # fmt: skip
                peer["calls"] = {"enabled": name != "dave"}
                peer["enum"] = {"trust": [verifier.peer_id]}
                await lab.start_peer(name, peer)
            yield lab
        finally:
            lab.stop_all()


async def until(check: Any, what: str) -> None:
    """Poll ``check()`` (a bound, never a speed assertion)."""
    async with asyncio.timeout(WAIT):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert check(), what


async def scenario(root: Path) -> None:
    chromium = require_tool("chromium")
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    verifier = Identity.generate()
    async with (
        network(root, verifier) as lab,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        alice, carol, dave = (lab.nodes[n] for n in ("alice", "carol", "dave"))
        alice_id, carol_id = alice.identity.peer_id, carol.identity.peer_id
        alice_key = public_key_from_peer_id(alice_id)
        page = await (await browser.new_context()).new_page()
        await page.goto(await one_time_link(session, root / "alice") + "#/contacts")
        await expect(page.locator("#contacts-message")).to_be_attached(timeout=WAIT_MS)

        # carol may watch alice (everyone may, by default), then writes as a stranger
        carol_app = peer_app(lab, "carol")
        await carol_app.add_contact("alice", alice_id)

        def carol_sees_alice(online: bool) -> bool:
            seen = carol_app.presence_of(alice_id)
            return seen is not None and seen.online is online

        await until(lambda: carol_sees_alice(True), "carol sees alice online")
        first = await chat_of(carol).send(alice_key, "hi, it is carol")
        request = page.locator(f'li[data-request="{carol_id}"]')  # no reload: the event stream
        await expect(request).to_contain_text("hi, it is carol", timeout=WAIT_MS)
        await expect(request).to_contain_text("1 message, 0 calls")
        nav_requests = page.locator("#nav-contacts .badge")  # the navigation says so too
        await expect(nav_requests).to_have_attribute("data-count", "1", timeout=WAIT_MS)
        await page.screenshot(path=ARTIFACTS / "contacts-request.png", full_page=True)
        await page.click("#nav-chat")
        await expect(page.locator("[data-conversation]")).to_have_count(0)  # not a conversation

        # reach settings: presence for contacts only, strangers' calls wait as requests
        await page.click("#nav-settings")
        await page.select_option("#presence-visibility", "contacts")
        await page.select_option("#who-calls", "request")
        await expect(page.locator("#auto-answer")).not_to_be_checked()
        await page.click("#reach-save")
        await expect(page.locator("#reach-message")).to_have_text("Saved.", timeout=WAIT_MS)
        await page.screenshot(path=ARTIFACTS / "settings-reach.png", full_page=True)
        kept = json.loads((root / "alice" / SETTINGS_FILE).read_text())
        assert kept == {
            "presence_visibility": "contacts", "who_may_call": "request", "auto_answer": False
        }  # fmt: skip

        def auto_answering() -> bool:  # what the running node does
            return calls_of(lab, "alice").service().config.auto_answer

        assert not auto_answering()
        await until(lambda: carol_sees_alice(False), "alice hidden from a stranger")

        carol_calls = calls_of(lab, "carol").service()
        call_id = await carol_calls.dial(alice_id, media_for(None, None, None))
        alice_calls = calls_of(lab, "alice")
        await until(
            lambda: (
                call_id in alice_calls.last
                and alice_calls.last[call_id].state is CallState.REQUESTED
            ),
            "carol's call waits as a request at alice's (it does not ring)",
        )
        await page.click("#nav-contacts")
        await expect(request).to_contain_text("1 message, 1 call", timeout=WAIT_MS)
        await carol_calls.hangup(call_id)
        await page.click("#nav-settings")  # auto-answer on: the running node answers itself
        await page.check("#auto-answer")
        await page.click("#reach-save")
        await expect(page.locator("#reach-message")).to_have_text("Saved.", timeout=WAIT_MS)
        assert auto_answering()
        await page.reload()
        await expect(page.locator("#auto-answer")).to_be_checked(timeout=WAIT_MS)
        await page.uncheck("#auto-answer")
        await page.click("#reach-save")
        await expect(page.locator("#reach-message")).to_have_text("Saved.", timeout=WAIT_MS)
        assert not auto_answering()
        await page.click("#nav-contacts")

        # accept: carol becomes a contact; her text is an unread conversation
        await request.locator(".request-name").fill("carol")
        await request.locator(".request-accept").click()
        await expect(page.locator('li[data-contact="carol"]')).to_be_visible(timeout=WAIT_MS)
        await expect(request).to_have_count(0)
        await expect(nav_requests).to_have_count(0, timeout=WAIT_MS)
        await expect(page.locator("#nav-chat .badge")).to_have_attribute(
            "data-count", "1", timeout=WAIT_MS
        )
        await page.click("#nav-chat")
        badge = page.locator('button[data-conversation="carol"] .badge')
        await expect(badge).to_have_attribute("data-unread", "1", timeout=WAIT_MS)
        await page.reload()  # the count is the node's: a reload keeps it
        await expect(badge).to_have_attribute("data-unread", "1", timeout=WAIT_MS)
        await page.click('button[data-conversation="carol"]')
        await expect(page.locator('#history li.theirs[data-text="hi, it is carol"]')).to_be_visible(
            timeout=WAIT_MS
        )
        await expect(badge).to_have_count(0)
        await expect(page.locator("#nav-chat .badge")).to_have_count(0, timeout=WAIT_MS)
        carol_chat = chat_of(carol)
        await until(lambda: carol_chat.status(first).read, "carol's node got the read receipt")
        await page.reload()
        await page.click('button[data-conversation="carol"]')
        await expect(page.locator("#history li.theirs")).to_have_count(1, timeout=WAIT_MS)
        await expect(badge).to_have_count(0)  # read stays read

        # add by phone number: only through ENUM the trusted verifier countersigned
        directory = directory_of(carol.dht, frozenset())
        await directory.publish_enum(
            carol.identity, CAROL_NUMBER, [sip_directive("sip:carol@example.test")]
        )
        vouch = countersign(
            verifier,
            RecordKind.ENUM_ENTRY,
            CAROL_NUMBER,
            carol.identity.public_key,
            now=time.time(),
        )
        await directory.publish_enum(carol.identity, CAROL_NUMBER, None, add=[vouch])
        await directory.publish_enum(
            dave.identity, DAVE_NUMBER, [sip_directive("sip:dave@example.test")]
        )
        await page.click("#nav-contacts")
        await page.fill("#contact-name", "carol-phone")
        await page.fill("#contact-peer", CAROL_NUMBER)
        await page.click("#contact-add")
        by_number = page.locator('li[data-contact="carol-phone"]')
        await expect(by_number).to_contain_text(carol_id, timeout=WAIT_MS)
        await page.fill("#contact-name", "dave-phone")
        await page.fill("#contact-peer", DAVE_NUMBER)
        await page.click("#contact-add")
        await expect(page.locator("#contacts-message")).to_contain_text(
            "unverified", timeout=WAIT_MS
        )
        await expect(page.locator('li[data-contact="dave-phone"]')).to_have_count(0)

        # decline: dave is blocked, his next text is dropped
        await page.click("#nav-contacts")
        await chat_of(dave).send(alice_key, "dave here")
        dave_row = page.locator(f'li[data-request="{dave.identity.peer_id}"]')
        await expect(dave_row).to_contain_text("dave here", timeout=WAIT_MS)
        await dave_row.locator(".request-decline").click()
        await expect(dave_row).to_have_count(0, timeout=WAIT_MS)
        alice_chat = chat_of(alice)
        dropped = alice_chat.blocked_dropped
        await chat_of(dave).send(alice_key, "dave again")
        await until(lambda: alice_chat.blocked_dropped > dropped, "dave's text dropped")
        answer = await page.evaluate("async () => (await fetch('/api/contacts/requests')).json()")
        assert answer["requests"] == [] and answer["blocked"] == [dave.identity.peer_id]
        inbox = await page.evaluate("async () => (await fetch('/api/inbox')).json()")
        texts = [m["text"] for m in inbox["messages"]]
        assert "dave again" not in texts and "hi, it is carol" in texts

        # unblock: dave's next text is a request again
        await page.locator(f'li[data-blocked="{dave.identity.peer_id}"] .blocked-unblock').click()
        await expect(page.locator("li[data-blocked]")).to_have_count(0, timeout=WAIT_MS)
        await chat_of(dave).send(alice_key, "dave, third time")
        await expect(dave_row).to_contain_text("dave, third time", timeout=WAIT_MS)
        await browser.close()


def test_strangers_become_requests_accepted_or_declined_and_settings_act(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

"""The desktop app end to end on loopback: two app instances in Chromium (Playwright from
Python driving Debian's /usr/bin/chromium) for two nodes attached to one serving home.

Each app is opened through its one-time link (the session cookie must come back
HttpOnly and SameSite=Strict); each page shows its node's peer id and fingerprint;
bob claims a login and alice adds him by that login, bob adds alice by peer id;
both presence dots turn online, and bob's "away" reaches alice's page through the
event stream without a reload. Bob's unread badge survives a reload (the node
keeps it); opening the conversation marks it read and alice's page shows "read".
The identity backup downloads and opens with its passphrase. Then the guard: a
wrong Host or Origin gets 403, no session 401, a spent link 401. Screenshots of
every screen go to tests/artifacts/web/ (not committed).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.app.config import parse_config
from p2pnode.app.homefiles import TOKEN_FILE
from p2pnode.app.peer_chat import ChatService, MailboxServerService
from p2pnode.app.runtime import Assembly, assemble
from p2pnode.app.web.backup import open_backup
from p2pnode.app.web.server import COOKIE, MAX_APP_BODY, MAX_PROXY_BODY, WEB_FILE
from p2pnode.app.web.sip_accounts import ACCOUNTS_FILE
from p2pnode.connectivity.signalling import SignallingService, fetch_contact
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.digest import stored_credentials
from p2pnode.identity import Identity
from tests.harness.audio import write_tone_wav
from tests.harness.tools import require_tool

WAIT = 30.0  # a bound on every wait, never a speed assertion
WAIT_MS = WAIT * 1000
ARTIFACTS = Path(__file__).parents[2] / "artifacts" / "web"
VIEWS = ("identity", "status", "contacts", "calls", "sip", "settings")  # chat: its own shots

UNLABELLED = """[...document.querySelectorAll("main input, main select, main textarea")]
  .filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label")).map((e) => e.id)"""

pytestmark = pytest.mark.slow


def _config(bootstrap: str | None, presence: dict[str, Any], web: bool) -> dict[str, Any]:
    return {
        "node": {"listen": "127.0.0.1:0", "bootstrap": [bootstrap] if bootstrap else []},
        "supernode": {"enabled": False, "relay_search": False},
        "control": {"port": 0},
        "presence": {"enabled": True, "listen": "127.0.0.1:0", **presence},
        "web": {"enabled": web},
    }


def chat_of(assembly: Assembly) -> ChatService:
    service = assembly.node.service("chat")
    assert isinstance(service, ChatService)
    return service


class Lab:
    """Nodes each with its own stop event, so bob can be stopped and started again."""

    def __init__(self, root: Path, tasks: asyncio.TaskGroup) -> None:
        self.root = root
        self.tasks = tasks
        self.nodes: dict[str, Assembly] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.stops: dict[str, asyncio.Event] = {}
        self.running: dict[str, asyncio.Task[None]] = {}

    async def start(self, name: str, config: dict[str, Any]) -> Assembly:
        home = self.root / name
        home.mkdir(exist_ok=True)
        assembly = assemble(home, parse_config(config), Identity.load_or_create(home))
        stop = self.stops[name] = asyncio.Event()
        self.running[name] = self.tasks.create_task(assembly.node.run(stop))
        async with asyncio.timeout(WAIT):
            await assembly.node.ready.wait()
        self.nodes[name] = assembly
        self.configs[name] = config
        return assembly

    async def start_peer(self, name: str, config: dict[str, Any]) -> Assembly:
        peer = await self.start(name, config)
        signalling = peer.node.service("signalling")
        assert isinstance(signalling, SignallingService)
        async with asyncio.timeout(WAIT):
            while not signalling.homes():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            while await fetch_contact(peer.dht.node, peer.identity.public_key) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await chat_of(peer).attached.wait()  # prekey bundle published, mailboxes drained
        return peer

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        async with asyncio.timeout(WAIT):
            await self.running[name]

    def stop_all(self) -> None:
        for stop in self.stops.values():
            stop.set()

    async def start_home(self, name: str = "home1", *, mailbox: bool = False) -> Assembly:
        """A serving home without the app server; also a mailbox server if ``mailbox``."""
        config = _config(None, {"home": "serve"}, web=False)
        if mailbox:
            config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
        return await self.start(name, config)


@asynccontextmanager
async def running_lab(root: Path) -> AsyncIterator[Lab]:
    """A Lab for the block: every node it started is told to stop when the block ends."""
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            yield lab
        finally:
            lab.stop_all()


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    """A serving home (also a mailbox), then alice and bob attached to it, each with the
    app server (hosted by the runtime: ``[web] enabled``), chat and calls."""
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            config = _config(None, {"home": "serve"}, web=False)
            config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
            home = await lab.start("home1", config)
            host, port = home.dht.address
            bootstrap = f"{host}:{port}"
            mailbox = home.node.service("mailbox")
            assert isinstance(mailbox, MailboxServerService) and mailbox.server is not None
            entry = f"{home.identity.peer_id}@127.0.0.1:{mailbox.server.address[1]}"
            for name in ("alice", "bob"):
                attach = {"homes": [home.identity.peer_id], "home": "attach"}
                config = _config(bootstrap, attach, web=True)
                config["chat"] = {
                    "enabled": True, "mailboxes": [entry], "retry_first": 0.5, "drain_every": 1.0,
                }  # fmt: skip
                config["calls"] = {"enabled": True}
                await lab.start_peer(name, config)
            yield lab
        finally:
            lab.stop_all()


async def one_time_link(session: aiohttp.ClientSession, home: Path) -> str:
    """What ``p2pnode app`` does: ask the app server for a link with the control token."""
    url = json.loads((home / WEB_FILE).read_text())["url"]
    token = (home / TOKEN_FILE).read_text().strip()
    async with session.post(f"{url}/app/ticket", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        link = (await r.json())["url"]
    assert isinstance(link, str) and link.startswith(url + "/open?ticket=")
    return link


async def cli_link(home: Path) -> str:
    """``p2pnode app --no-browser``: the real command prints a one-time link."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pnode", "app", "--no-browser", "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )  # fmt: skip
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert b"works once" in err
    link = out.decode().strip()
    assert "/open?ticket=" in link
    return link


async def check_guard(session: aiohttp.ClientSession, home: Path, spent_link: str) -> None:
    url = json.loads((home / WEB_FILE).read_text())["url"]
    port = url.rsplit(":", 1)[1]
    async with session.get(f"{url}/api/status") as no_session:
        assert no_session.status == 401
    async with session.get(f"{url}/app/whoami") as no_session_app:
        assert no_session_app.status == 401
    async with session.post(f"{url}/app/ticket") as no_token:
        assert no_token.status == 401
    async with session.get(spent_link, allow_redirects=False) as spent:
        assert spent.status == 401  # a one-time link works once
    link = await one_time_link(session, home)
    async with session.get(link, allow_redirects=False) as opened:
        assert opened.status == 303
        cookie = opened.cookies[COOKIE].value
    jar = {"Cookie": f"{COOKIE}={cookie}"}
    async with session.get(f"{url}/api/status", headers=jar) as fine:
        assert fine.status == 200  # the session alone is enough for a read
    rebinding = {**jar, "Host": f"attacker.example:{port}"}
    async with session.get(f"{url}/api/status", headers=rebinding) as wrong_host:
        assert wrong_host.status == 403
    async with session.get(f"{url}/", headers={"Host": f"attacker.example:{port}"}) as page:
        assert page.status == 403
    foreign = {**jar, "Origin": "http://attacker.example"}
    async with session.put(
        f"{url}/api/presence", json={"status": "busy"}, headers=foreign
    ) as wrong_origin:
        assert wrong_origin.status == 403
    async with session.get(f"{url}/api/status", headers=foreign) as wrong_origin_read:
        assert wrong_origin_read.status == 403
    own = {**jar, "Origin": url}
    async with session.post(f"{url}/app/login", data=b"x" * (MAX_APP_BODY + 1), headers=own) as big:
        assert big.status == 413  # bounded before it is parsed
    async with session.put(
        f"{url}/api/presence", data=b"x" * (MAX_PROXY_BODY + 1), headers=own
    ) as big_proxied:
        assert big_proxied.status == 413  # never forwarded
    async with session.post(f"{url}/app/login", json={"login": "NOT A LOGIN"}, headers=own) as bad:
        assert bad.status == 400
    async with session.put(f"{url}/api/presence", json={"status": "busy"}, headers=jar) as bare:
        assert bare.status == 403  # a state change must say where it comes from
    with pytest.raises(aiohttp.WSServerHandshakeError) as ws_refused:
        await session.ws_connect(f"{url}/api/events", headers=foreign)
    assert ws_refused.value.status == 403


async def scenario(root: Path) -> None:
    chromium = require_tool("chromium")
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tone = root / "pages-440.wav"  # both pages' fake microphone: they are the call's endpoints
    write_tone_wav(tone, 440.0, 20.0)
    async with (
        network(root) as lab,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={tone}"],
        )  # fmt: skip
        alice, bob = lab.nodes["alice"], lab.nodes["bob"]
        pages = {}
        links = {}
        for name, assembly in (("alice", alice), ("bob", bob)):
            context = await browser.new_context(accept_downloads=True)
            page = await context.new_page()
            links[name] = await one_time_link(session, root / name)
            await page.goto(links[name])
            await expect(page.locator("#peer-id")).to_have_text(
                assembly.identity.peer_id, timeout=WAIT_MS
            )
            await expect(page.locator("#fingerprint")).to_have_text(assembly.identity.fingerprint)
            (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            pages[name] = page

        login = f"bob-{secrets.token_hex(3)}"
        await pages["bob"].fill("#login", login)
        await pages["bob"].click("#claim")
        await expect(pages["bob"].locator("#login-claimed")).to_have_text(login, timeout=WAIT_MS)
        await pages["bob"].screenshot(path=ARTIFACTS / "identity-claimed.png", full_page=True)

        async with pages["bob"].expect_download() as download_info:
            await pages["bob"].fill("#export-pass", "correct horse battery")
            await pages["bob"].click("#export")
        backup = root / "bob.backup.json"  # kept: bob's browser context closes later
        await (await download_info.value).save_as(backup)
        data = await asyncio.to_thread(Path(backup).read_bytes)
        opened = open_backup(data, "correct horse battery")
        assert opened.peer_id == bob.identity.peer_id

        for me, other, peer in (
            ("alice", "bob", login),
            ("bob", "alice", alice.identity.peer_id),
        ):
            page = pages[me]
            await page.click("#nav-contacts")
            await page.fill("#contact-name", other)
            await page.fill("#contact-peer", peer)
            await page.click("#contact-add")
            row = page.locator(f'li[data-contact="{other}"]')
            await expect(row).to_have_attribute("data-presence", "online", timeout=WAIT_MS)
        fingerprint = pages["alice"].locator('li[data-contact="bob"] .fingerprint')
        await expect(fingerprint).to_have_text(bob.identity.fingerprint)
        await pages["alice"].screenshot(path=ARTIFACTS / "contacts-online.png", full_page=True)

        await pages["bob"].click("#nav-settings")
        loaded = pages["bob"].locator("#presence-form")
        await expect(loaded).to_have_attribute("data-loaded", "yes", timeout=WAIT_MS)
        await pages["bob"].select_option("#presence-status", "away")
        await pages["bob"].fill("#presence-note", "at lunch")
        await pages["bob"].click("#presence-save")
        row = pages["alice"].locator('li[data-contact="bob"]')  # no reload: the event stream
        await expect(row).to_have_attribute("data-presence", "away", timeout=WAIT_MS)
        await expect(row).to_contain_text("at lunch")
        await expect(pages["alice"].locator("#live")).to_contain_text("live")

        await pages["alice"].click("#nav-chat")
        await pages["alice"].click('button[data-conversation="bob"]')
        await pages["alice"].fill("#chat-text", "hello bob")
        await pages["alice"].press("#chat-text", "Enter")  # Enter sends
        sent = pages["alice"].locator('#history li.mine[data-text="hello bob"] .receipt')
        await expect(sent).to_have_attribute("data-receipt", "delivered", timeout=WAIT_MS)
        await pages["bob"].click("#nav-chat")
        badge = pages["bob"].locator('button[data-conversation="alice"] .badge')
        await expect(badge).to_have_attribute("data-unread", "1", timeout=WAIT_MS)
        await pages["bob"].screenshot(path=ARTIFACTS / "chat-unread.png", full_page=True)
        await pages["bob"].reload()  # the unread count is the node's: a reload keeps it
        await expect(badge).to_have_attribute("data-unread", "1", timeout=WAIT_MS)
        await pages["bob"].click('button[data-conversation="alice"]')
        await expect(
            pages["bob"].locator('#history li.theirs[data-text="hello bob"]')
        ).to_be_visible()
        await expect(badge).to_have_count(0)
        # bob's open, visible conversation marked it read: alice's page shows the receipt
        await expect(sent).to_have_attribute("data-receipt", "read", timeout=WAIT_MS)
        await pages["bob"].fill("#chat-text", "hi alice")
        await pages["bob"].click("#chat-send")
        reply = pages["alice"].locator('#history li.theirs[data-text="hi alice"]')
        await expect(reply).to_be_visible(timeout=WAIT_MS)  # no reload: events and polling
        await pages["alice"].screenshot(path=ARTIFACTS / "chat-conversation.png", full_page=True)

        await pages["alice"].click("#nav-sip")
        await pages["alice"].fill("#sip-new-login", "deskphone")
        await pages["alice"].fill("#sip-domain", "alice.example")
        await pages["alice"].click("#sip-add")
        await expect(pages["alice"].locator("#sip-password")).not_to_be_empty(timeout=WAIT_MS)
        await expect(pages["alice"].locator("#sip-server")).to_have_text("alice.example")
        await expect(pages["alice"].locator('tr[data-login="deskphone"]')).to_be_visible()
        await pages["alice"].screenshot(path=ARTIFACTS / "sip-account.png", full_page=True)
        password = await pages["alice"].locator("#sip-password").text_content()
        store = AccountStore.open(root / "alice" / ACCOUNTS_FILE, None)
        try:  # the gateway's own store checks the password shown on the page
            credentials = store.credentials("deskphone")
        finally:
            store.close()
        assert credentials is not None and password
        assert credentials == stored_credentials("deskphone", "alice.example", password)

        for view in VIEWS:  # by keyboard: focus the link, Enter; the heading takes focus
            await pages["alice"].focus(f"#nav-{view}")
            await pages["alice"].keyboard.press("Enter")
            await expect(pages["alice"].locator("main h2")).to_be_focused()
            unlabelled = await pages["alice"].evaluate(UNLABELLED)
            assert unlabelled == [], (view, unlabelled)  # every field has a label
            await pages["alice"].screenshot(path=ARTIFACTS / f"{view}.png", full_page=True)
        await pages["alice"].click("#nav-status")
        await expect(pages["alice"].locator("#table")).to_contain_text("contacts")
        await pages["alice"].screenshot(path=ARTIFACTS / "status.png", full_page=True)
        await expect(pages["alice"].locator("#homes")).to_contain_text("attached to 1")

        await pages["alice"].click("#nav-calls")
        await pages["alice"].fill("#call-to", "bob")
        await pages["alice"].click("#call-place")
        await pages["bob"].click("#nav-calls")
        incoming = pages["bob"].locator("[data-incoming]")
        await expect(incoming).to_be_visible(timeout=WAIT_MS)
        await pages["bob"].screenshot(path=ARTIFACTS / "calls-incoming.png", full_page=True)
        await incoming.get_by_role("button", name="Answer").click()
        for page in pages.values():
            row = page.locator("tr[data-call]").first
            await expect(row).to_have_attribute("data-state", "answered", timeout=WAIT_MS)
            await expect(row).to_contain_text("direct")  # the path, shown
        for page in pages.values():  # each page's WebAudio analyser hears the other's 440 Hz
            await page.wait_for_function(
                "() => (window.p2pPeaks || []).length >= 20", timeout=WAIT_MS, polling=200
            )
            peaks: list[float] = await page.evaluate("() => window.p2pPeaks.slice(-20)")
            assert len([p for p in peaks if abs(p - 440.0) < 15]) >= 15, peaks
        await pages["alice"].screenshot(path=ARTIFACTS / "calls-answered.png", full_page=True)
        await pages["alice"].get_by_role("button", name="Hang up bob").click()
        ended = pages["bob"].locator("tr[data-call]").first
        await expect(ended).to_have_attribute("data-state", "hung-up", timeout=WAIT_MS)

        # bob's node stops: alice's text waits in the mailbox, shown as such on her page
        await pages["bob"].context.close()
        await lab.stop("bob")
        await pages["alice"].click("#nav-chat")
        await pages["alice"].click('button[data-conversation="bob"]')
        await pages["alice"].fill("#chat-text", "while you were away")
        await pages["alice"].click("#chat-send")
        held = pages["alice"].locator('#history li.mine[data-text="while you were away"] .receipt')
        await expect(held).to_have_attribute(
            "data-receipt", "queued for offline delivery (1 copy held)", timeout=WAIT_MS
        )
        await pages["alice"].screenshot(path=ARTIFACTS / "chat-queued.png", full_page=True)
        bob = await lab.start_peer("bob", lab.configs["bob"])  # the same home
        context = await browser.new_context()
        page = pages["bob"] = await context.new_page()
        await page.goto(await one_time_link(session, root / "bob") + "#/chat")
        await page.click('button[data-conversation="alice"]')
        late = page.locator('#history li.theirs[data-text="while you were away"]')
        await expect(late).to_be_visible(timeout=WAIT_MS)
        # delivered, then read: bob's page has the conversation open
        await expect(held).to_have_attribute("data-receipt", "read", timeout=WAIT_MS)

        dark = await browser.new_context(color_scheme="dark")
        dark_page = await dark.new_page()
        await dark_page.goto(await cli_link(root / "alice") + "#/contacts")  # `p2pnode app`
        await expect(dark_page.locator('li[data-contact="bob"]')).to_be_visible(timeout=WAIT_MS)
        await dark_page.screenshot(path=ARTIFACTS / "contacts-dark.png", full_page=True)
        await dark_page.click("#nav-identity")
        await dark_page.set_input_files("#import-file", backup)
        await dark_page.fill("#import-pass", "correct horse battery")
        await dark_page.click("#import")
        await expect(dark_page.locator("#identity-message")).to_contain_text(
            f"Imported {bob.identity.peer_id}", timeout=WAIT_MS
        )
        await dark_page.screenshot(path=ARTIFACTS / "identity-imported-dark.png", full_page=True)
        assert Identity.load(root / "alice").peer_id == bob.identity.peer_id  # used at restart
        kept = list((root / "alice").glob("identity.key.replaced-*"))
        assert len(kept) == 1  # alice's own key is kept, never lost
        await browser.close()
        await check_guard(session, root / "alice", links["alice"])


def test_two_app_instances_claim_add_each_other_and_see_presence(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

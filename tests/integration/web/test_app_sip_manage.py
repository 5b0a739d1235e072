"""The SIP equipment view manages the gateway: unregister one device, remove an account.

One node, ``gw``, as ``p2pnode run`` builds it with ``[sip]`` and the app (no
peers: nothing here needs the P2P side). Three of our own user agents register:
two desk phones as alice, one as bob. On gw's page (Debian's chromium):

- "Unregister" on one of alice's devices drops that binding from the running
  registrar at once; her other device stays registered and listed.
- "Remove…" on bob asks first (Cancel keeps him); confirmed, the account leaves
  the page and the accounts file, and his registration is gone from the running
  registrar at once (not at its expiry); his phone cannot register again.
Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.app.sip_service import SipService
from p2pnode.app.web.sip_accounts import ACCOUNTS_FILE
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, WAIT, WAIT_MS, Lab, one_time_link

pytestmark = [pytest.mark.slow]

DOMAIN = "gw.test"


def gateway_config() -> dict[str, Any]:
    return {
        "node": {"listen": "127.0.0.1:0", "bootstrap": []},
        "supernode": {"enabled": False, "relay_search": False},
        "control": {"port": 0},
        "web": {"enabled": True},
        "sip": {"enabled": True, "domain": DOMAIN, "listen": "127.0.0.1:0", "claim_logins": False},
    }


async def scenario(root: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (root / "gw").mkdir()
    store = AccountStore.open(root / "gw" / ACCOUNTS_FILE, DOMAIN)
    passwords = {name: store.add(name, None, randbytes=os.urandom)[1] for name in ("alice", "bob")}
    store.close()
    async with (
        asyncio.TaskGroup() as tasks,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        lab = Lab(root, tasks)
        phones: list[SipUserAgent] = []
        browser = None
        try:
            gw = await lab.start("gw", gateway_config())
            sip = gw.node.service("sip")
            assert isinstance(sip, SipService) and sip.gateway is not None
            server = sip.gateway.address
            assert server is not None
            for login, name in (("alice", "desk-one"), ("alice", "desk-two"), ("bob", "bob-desk")):
                phone = SipUserAgent(login, passwords[login], DOMAIN, server, user_agent=name)
                phones.append(phone)
                await phone.start()
                await phone.register(300)
            registrar = sip.gateway.registrar
            now = asyncio.get_running_loop().time
            assert len(registrar.bindings("alice", now())) == 2
            browser = await playwright.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = await (await browser.new_context()).new_page()
            await page.goto(await one_time_link(session, root / "gw") + "#/sip")
            rows = page.locator("#sip-devices tbody tr")
            await expect(rows).to_have_count(3, timeout=WAIT_MS)

            # one of alice's devices unregistered: that binding only, at once
            desk_one = rows.filter(has_text="desk-one")
            await desk_one.get_by_role("button", name="Unregister").click()
            await expect(rows.filter(has_text="desk-one")).to_have_count(0, timeout=WAIT_MS)
            await expect(rows).to_have_count(2)
            left = registrar.bindings("alice", now())
            assert [b.user_agent for b in left] == ["desk-two"]

            # bob's account removed: asked first; then gone, and so are his registrations
            await page.get_by_role("button", name="Remove account bob").click()
            await page.get_by_role("button", name="Cancel").click()
            await expect(page.locator("tr[data-login='bob']")).to_have_count(1)
            await page.get_by_role("button", name="Remove account bob").click()
            await page.screenshot(path=ARTIFACTS / "sip-remove-confirm.png", full_page=True)
            await page.get_by_role("button", name="Remove bob").click()
            await expect(page.locator("#sip-message")).to_contain_text(
                "Removed bob; 1 registered device dropped.", timeout=WAIT_MS
            )
            assert registrar.bindings("bob", now()) == ()  # now, not at the 300 s expiry
            await expect(page.locator("tr[data-login='bob']")).to_have_count(0, timeout=WAIT_MS)
            await expect(page.locator("tr[data-login='alice']")).to_have_count(1)
            await expect(rows).to_have_count(1, timeout=WAIT_MS)  # alice's desk-two only
            await page.screenshot(path=ARTIFACTS / "sip-removed.png", full_page=True)
            store = AccountStore.open(root / "gw" / ACCOUNTS_FILE, None)
            assert store.logins() == ("alice",)
            store.close()
            with pytest.raises(UaError):  # bob's phone cannot come back
                await phones[2].register(300)
            assert len(registrar.bindings("alice", now())) == 1
        finally:
            if browser is not None:
                await browser.close()
            for phone in phones:
                await phone.close()
            lab.stop_all()


def test_app_unregisters_a_device_and_removes_an_account(tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    asyncio.run(asyncio.wait_for(scenario(tmp_path, chromium), 5 * WAIT))

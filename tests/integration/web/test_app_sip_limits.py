"""The SIP equipment view changes an account's limits, and shows the node's refusals.

One node, ``gw``, as ``p2pnode run`` builds it with ``[sip]`` and the app; one
account, alice (no calls to numbers, 4 concurrent calls: the defaults). On gw's
page (Debian's chromium), "Limits…" on alice:

- 0 concurrent calls, then "many": each refused by the node, the reason shown
  beside the field (the field marked invalid), the accounts file unchanged;
- calls to numbers allowed and 2 concurrent calls: saved, the row shows them, the
  accounts file holds them and the running gateway's own account look-up (what it
  checks on every call) sees them without a restart.
Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from p2pnode.app.sip_service import SipService
from p2pnode.app.web.sip_accounts import ACCOUNTS_FILE
from p2pnode.gateways.sip.accounts import DEFAULT_MAX_CALLS, AccountStore
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, WAIT_MS, Lab, one_time_link
from tests.integration.web.test_app_sip_manage import DOMAIN, gateway_config

pytestmark = [pytest.mark.slow]


def stored_limits(root: Path) -> tuple[bool, int]:
    store = AccountStore.open(root / "gw" / ACCOUNTS_FILE, None)
    try:
        account = store.get("alice")
    finally:
        store.close()
    assert account is not None
    return account.allow_e164, account.max_calls


async def scenario(root: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (root / "gw").mkdir()
    store = AccountStore.open(root / "gw" / ACCOUNTS_FILE, DOMAIN)
    store.add("alice", None, randbytes=os.urandom)
    store.close()
    async with (
        asyncio.TaskGroup() as tasks,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        lab = Lab(root, tasks)
        browser = None
        try:
            gw = await lab.start("gw", gateway_config())
            sip = gw.node.service("sip")
            assert isinstance(sip, SipService) and sip.gateway is not None
            before = sip.gateway.accounts.get("alice")
            assert before is not None and before.max_calls == DEFAULT_MAX_CALLS
            browser = await playwright.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = await (await browser.new_context()).new_page()
            await page.goto(await one_time_link(session, root / "gw") + "#/sip")
            row = page.locator("tr[data-login='alice']")
            cells = row.locator(".max-calls")
            await expect(cells).to_have_text(str(DEFAULT_MAX_CALLS), timeout=WAIT_MS)
            await expect(row.locator(".e164")).to_have_text("no")

            await page.get_by_role("button", name="Limits of alice").click()
            form = page.locator("form[data-limits='alice']")
            calls = form.get_by_label("Concurrent calls")
            for wrong, reason in (("0", "greater than or equal to 1"), ("many", "integer")):
                await calls.fill(wrong)
                await form.get_by_role("button", name="Save limits").click()
                alert = form.get_by_role("alert")
                await expect(alert).to_contain_text("max_calls", timeout=WAIT_MS)
                await expect(alert).to_contain_text(reason)
                await expect(calls).to_have_attribute("aria-invalid", "true")
                assert stored_limits(root) == (False, DEFAULT_MAX_CALLS)
            await page.screenshot(path=ARTIFACTS / "sip-limits-refused.png", full_page=True)

            await form.get_by_label("Calls to phone numbers").check()
            await calls.fill("2")
            await form.get_by_role("button", name="Save limits").click()
            await expect(page.locator("#sip-message")).to_contain_text(
                "Limits of alice saved.", timeout=WAIT_MS
            )
            await expect(form).to_have_count(0)
            await expect(row.locator(".max-calls")).to_have_text("2", timeout=WAIT_MS)
            await expect(row.locator(".e164")).to_have_text("allowed")
            assert stored_limits(root) == (True, 2)
            running = sip.gateway.accounts.get("alice")  # the gateway's own look-up, live
            assert running is not None and (running.allow_e164, running.max_calls) == (True, 2)
            await page.screenshot(path=ARTIFACTS / "sip-limits-saved.png", full_page=True)
        finally:
            if browser is not None:
                await browser.close()
            lab.stop_all()


def test_app_changes_an_accounts_limits_and_shows_refusals(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path, require_tool("chromium")))

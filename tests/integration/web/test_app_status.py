"""The app's Status view tells the truth, live, on loopback.

home1 is a supernode (public at 127.0.0.1: its role, relay allocations and
attached peers are what it carries) serving as a home, with the app; alice is
a peer with calls, relay search and the app. Each field the view shows is
compared with the node's own service statistics, and two must move without a
reload: the home's attached-peer count when bob attaches, and its relay
allocations when a TURN allocation is made with the credentials alice's node
hands its page for calls (so the relay alice's calls would use is the one the
home carries). Screenshots of both Status screens go to tests/artifacts/web/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice.turn import create_turn_endpoint

from p2pnode.app.roles import SupernodeService
from p2pnode.app.services import DhtService, RelaySearchService
from p2pnode.connectivity.relays import RELAY_BUCKETS, relay_key
from p2pnode.connectivity.signalling import SignallingService
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, Lab, _config, one_time_link
from tests.integration.web.test_app_call import attached

pytestmark = pytest.mark.slow

WAIT = 30.0  # a bound on every wait, never a speed assertion
WAIT_MS = WAIT * 1000


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            home: dict[str, Any] = _config(None, {"home": "serve"}, web=True)
            home["supernode"] = {"public_ip": "127.0.0.1", "relay_search": False}
            home["relay"] = {"listen": "127.0.0.1:0", "allow_peers": ["127.0.0.0/8"]}
            node = await lab.start("home1", home)
            host, port = node.dht.address
            # a peer's relay search looks once at start, then every 5 minutes while short
            # of relays: let the supernode's advert be in the DHT first
            async with asyncio.timeout(WAIT):
                while not await advertised(node.dht):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            attach = {"homes": [node.identity.peer_id], "home": "attach"}
            alice = _config(f"{host}:{port}", attach, web=True)
            alice["supernode"] = {"enabled": False, "relay_search": True}
            alice["calls"] = {"enabled": True}
            await lab.start("alice", alice)
            await attached(lab, "alice")
            yield lab
        finally:
            lab.stop_all()


async def advertised(dht: DhtService) -> bool:
    for bucket in range(RELAY_BUCKETS):
        if (await dht.get(relay_key(bucket))).records:
            return True
    return False


class _Inbox(asyncio.DatagramProtocol):
    """The allocation's owner: it only has to exist (nothing is relayed here)."""


async def scenario(root: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with (
        network(root) as lab,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        home, alice = lab.nodes["home1"], lab.nodes["alice"]
        supernode = home.node.service("supernode")
        assert isinstance(supernode, SupernodeService)
        async with asyncio.timeout(WAIT):  # public at 127.0.0.1: promoted at once
            while supernode.statistics().role.value != "supernode":  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        relay_udp = supernode.statistics().relay_udp[0]
        relay_text = f"{relay_udp[0]}:{relay_udp[1]}"
        search = alice.node.service("relay-search")
        assert isinstance(search, RelaySearchService)
        async with asyncio.timeout(WAIT):  # alice's search finds the home's advert
            while not search.statistics().chosen:  # noqa: ASYNC110
                await asyncio.sleep(0.2)

        pages = {}
        for name in ("home1", "alice"):
            page = await (await browser.new_context()).new_page()
            await page.goto(await one_time_link(session, root / name))
            await page.click("#nav-status")
            pages[name] = page
        served = pages["home1"]
        await expect(served.locator("#role")).to_contain_text("supernode", timeout=WAIT_MS)
        await expect(served.locator("#reachability")).to_have_text("public")
        capacity = supernode.statistics().capacity
        await expect(served.locator("#relay-load")).to_contain_text(f"0 of {capacity}")
        await expect(served.locator("#attached-peers")).to_contain_text("1")
        await expect(served.locator("#homes")).to_contain_text("a home itself")
        await expect(served.locator("#nat-type")).to_contain_text("p2pnode nat")
        await expect(served.locator("#relays-chosen")).to_contain_text("relay_search off")
        await expect(served.locator("#call-relay")).to_have_count(0)  # no calls on the home

        mine = pages["alice"]
        await expect(mine.locator("#role")).to_contain_text("peer")
        await expect(mine.locator("#homes")).to_have_text("attached to 1 home supernode")
        chosen = [f"{h}:{p}" for h, p in search.statistics().chosen]
        await expect(mine.locator("#relays-chosen")).to_contain_text(chosen[0], timeout=WAIT_MS)
        await expect(mine.locator("#call-relay")).to_contain_text(relay_text, timeout=WAIT_MS)
        await mine.screenshot(path=ARTIFACTS / "status-peer.png", full_page=True)

        # live: a second peer attaches, and a TURN allocation with alice's call credentials
        await lab.start("bob", lab.configs["alice"] | {"web": {"enabled": False}})
        await attached(lab, "bob")
        signalling = home.node.service("signalling")
        assert isinstance(signalling, SignallingService)
        home_stats = signalling.statistics().home
        assert home_stats is not None and home_stats.attached == 2
        await expect(served.locator("#attached-peers")).to_contain_text("2", timeout=WAIT_MS)
        plan = await mine.evaluate("async () => (await fetch('/api/calls/ice')).json()")
        turn = next(s for s in plan["ice_servers"] if s["urls"].startswith("turn:"))
        async with asyncio.timeout(WAIT):
            transport, _ = await create_turn_endpoint(
                _Inbox, relay_udp, turn["username"], turn["credential"], lifetime=600
            )
        try:
            await expect(served.locator("#relay-load")).to_contain_text(
                f"1 of {capacity}", timeout=WAIT_MS
            )
            assert supernode.statistics().load == 1
            await served.screenshot(path=ARTIFACTS / "status-supernode.png", full_page=True)
        finally:
            transport.close()
        await browser.close()


def test_status_view_shows_role_relays_homes_and_peers_live(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path, require_tool("chromium")))

"""The desktop app in Firefox: Debian's firefox-esr driven over WebDriver BiDi, offline.

One node with ``[web] enabled = true``; Firefox opens its one-time link and the
app renders (polled, never slept for); every view is reached from the nav by
keyboard alone (Tab to the next link, Enter) and shows its heading, which gets
the focus; Identity shows the node's peer id and fingerprint; the session
cookie is HttpOnly (invisible to the page). A second Firefox whose profile says
the system is dark renders the dark palette where the first rendered the light
one. A screenshot per view goes to tests/artifacts/web/firefox-*.png.

Everything -- node, HTTP client, Firefox -- runs in a fresh network namespace
with only loopback (tests/harness/firefox.py: run_offline), and the profile's
user.js turns off Firefox's own background connections besides.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.app.web.server import COOKIE
from tests.harness.firefox import Firefox, launch_firefox, run_offline, write_profile
from tests.harness.tools import require_root, require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, Lab, _config, one_time_link

pytestmark = [pytest.mark.slow, pytest.mark.interop]

WAIT = 30.0  # a bound on every wait, never a speed assertion
# (route, heading) in the nav's order, as app.js lists them
VIEWS = (
    ("identity", "Identity"),
    ("status", "Status"),
    ("contacts", "Contacts"),
    ("chat", "Chat"),
    ("calls", "Calls"),
    ("sip", "SIP equipment"),
    ("settings", "Settings"),
)
HEADING = 'document.querySelector("main h2")?.textContent'
BACKGROUND = 'getComputedStyle(document.documentElement).getPropertyValue("--bg").trim()'


def _node_config() -> dict[str, Any]:
    config = _config(None, {"home": "serve"}, web=True)
    config["calls"] = {"enabled": True}
    config["chat"] = {"enabled": True}  # so the Chat view is the real one, not its notice
    return config


async def _open_app(firefox: Firefox, link: str, peer_id: str) -> None:
    await firefox.navigate(link)
    await firefox.wait_for(
        f'document.querySelector("#peer-id")?.textContent === {json.dumps(peer_id)}', WAIT
    )


async def _walk_views(firefox: Firefox) -> None:
    """Each view from the previous one's nav link by Tab then Enter, as a keyboard user goes."""
    landmarks = 'document.querySelectorAll("nav[aria-label=Sections], main").length === 2'
    assert await firefox.evaluate(landmarks)
    for (before, _), (route, heading) in itertools.pairwise(VIEWS):
        await firefox.evaluate(f'document.getElementById("nav-{before}").focus()')
        await firefox.press("Tab")
        assert await firefox.evaluate("document.activeElement.id") == f"nav-{route}"
        await firefox.press("Enter")
        await firefox.wait_for(
            f'location.hash === "#/{route}" && {HEADING} === {json.dumps(heading)}', WAIT
        )
        # the shell moves the focus to the new view's heading (screen readers announce it)
        await firefox.wait_for('document.activeElement.tagName === "H2"', WAIT)
        assert (
            await firefox.evaluate(
                f'document.querySelector("#nav-{route}").getAttribute("aria-current")'
            )
            == "page"
        )
        await firefox.wait_for(
            '!document.querySelector("main [role=status]")?.textContent.startsWith("Loading")', WAIT
        )
        # the real view, not the notice for a backend that is off
        assert await firefox.evaluate('document.querySelector("main [id$=-missing]")') is None
        await firefox.screenshot(ARTIFACTS / f"firefox-{route}.png")


async def scenario(root: Path, executable: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert [name for _, name in socket.if_nameindex()] == ["lo"]  # no way out but loopback
    async with asyncio.TaskGroup() as tasks, aiohttp.ClientSession() as session:
        lab = Lab(root, tasks)
        try:
            node = await lab.start("alice", _node_config())
            peer_id, fingerprint = node.identity.peer_id, node.identity.fingerprint
            light = write_profile(root / "firefox-light", dark=False)
            async with launch_firefox(executable, light) as firefox:
                await _open_app(firefox, await one_time_link(session, root / "alice"), peer_id)
                assert (
                    await firefox.evaluate('document.querySelector("#fingerprint").textContent')
                    == fingerprint
                )
                assert (
                    await firefox.evaluate(f'document.cookie.includes("{COOKIE}=")') is False
                )  # HttpOnly
                assert (
                    await firefox.evaluate('matchMedia("(prefers-color-scheme: dark)").matches')
                    is False
                )
                light_bg = await firefox.evaluate(BACKGROUND)
                await firefox.screenshot(ARTIFACTS / "firefox-identity.png")
                await _walk_views(firefox)
            dark = write_profile(root / "firefox-dark", dark=True)
            async with launch_firefox(executable, dark) as firefox:
                await _open_app(firefox, await one_time_link(session, root / "alice"), peer_id)
                assert (
                    await firefox.evaluate('matchMedia("(prefers-color-scheme: dark)").matches')
                    is True
                )
                dark_bg = await firefox.evaluate(BACKGROUND)
                assert dark_bg != light_bg, (light_bg, dark_bg)
                await firefox.screenshot(ARTIFACTS / "firefox-identity-dark.png")
        finally:
            lab.stop_all()


def test_app_views_keyboard_and_themes_in_firefox(tmp_path: Path) -> None:
    executable = require_tool("firefox-esr")
    require_tool("ip", "iproute2")
    require_root()
    run_offline(lambda: scenario(tmp_path, executable))

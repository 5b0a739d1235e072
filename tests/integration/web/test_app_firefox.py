"""The desktop app in Firefox: Debian's firefox-esr driven over WebDriver BiDi, offline.

A serving home, alice (``[web] enabled = true``, chat, calls) and bob (an
unattended aiortc node: auto-answer with 660 Hz, record). Firefox opens alice's
one-time link and the app renders (polled, never slept for); every view is
reached from the nav by keyboard alone (Tab to the next link, Enter) and shows
its heading, which gets the focus; Identity shows the node's peer id and
fingerprint; the session cookie is HttpOnly (invisible to the page). Then the
page calls bob, typed and submitted by keyboard: Firefox's fake microphone
(``media.navigator.streams.fake``) is a 1 kHz tone, which bob's recording must
hold (FFT), and the page's analyser must hear bob's 660 Hz; then bob's node
calls alice, the page's alert takes the focus, the page answers, and the tones
cross again. A second Firefox
whose profile says the system is dark renders the dark palette where the first
rendered the light one. Screenshots: tests/artifacts/web/firefox-*.png.

Everything -- nodes, HTTP client, Firefox -- runs in a fresh network namespace
(tests/harness/firefox.py: run_offline) with loopback and one veth pair whose
both ends are inside it (ICE skips loopback); the profile's user.js turns off
Firefox's own background connections besides.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from p2pnode.app.peer_calls import CALLS_DIR, CallsNodeService, media_for
from p2pnode.app.web.server import COOKIE
from tests.harness.firefox import (
    DUMMY,
    DUMMY_PEER,
    Firefox,
    launch_firefox,
    run_offline,
    write_profile,
)
from tests.harness.tools import require_root, require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, Lab, _config, one_time_link
from tests.integration.web.test_app_call import assert_tone, attached

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
FIREFOX_FAKE_TONE = 1000.0  # media.navigator.streams.fake: Firefox's fake microphone, 1 kHz
MEDIA_PREFS: dict[str, bool | int | str] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,  # the page plays the call without a click
    # headless without a sound server has no audio device: the AudioContext (the
    # page's analyser) stays "suspended" at time 0 unless cubeb's mock device runs it
    "media.cubeb.force_mock_context": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,  # plain host candidates
    "media.peerconnection.ice.default_address_only": False,
}
HANG_UP = """[...document.querySelectorAll("tr[data-state=answered] button")]
  .find((b) => b.textContent === "Hang up").click()"""
BACKGROUND = 'getComputedStyle(document.documentElement).getPropertyValue("--bg").trim()'


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    """A serving home; alice (app, chat, calls) and bob (calls: auto-answer 660 Hz, record)."""
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            home = await lab.start("home1", _config(None, {"home": "serve"}, web=False))
            host, port = home.dht.address
            attach = {"homes": [home.identity.peer_id], "home": "attach"}
            alice = _config(f"{host}:{port}", attach, web=True)
            alice["calls"] = {"enabled": True}
            alice["chat"] = {"enabled": True}  # so the Chat view is the real one, not its notice
            bob = _config(f"{host}:{port}", attach, web=False)
            bob["calls"] = {
                "enabled": True,
                "auto_answer": True,
                "answer_tone": 660.0,
                "record": True,
            }
            for name, config in (("alice", alice), ("bob", bob)):
                await lab.start(name, config)
                await attached(lab, name)
            yield lab
        finally:
            lab.stop_all()


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


async def _call_bob(firefox: Firefox, lab: Lab, root: Path) -> None:
    """The Firefox page calls bob's aiortc node with Firefox's fake microphone (1 kHz)."""
    bob = lab.nodes["bob"]
    await firefox.evaluate('document.getElementById("nav-calls").click()')
    await firefox.wait_for(f'{HEADING} === "Calls"', WAIT)
    # the view renders again once its data loaded: type only into the settled form
    await firefox.wait_for(
        '!document.querySelector("main [role=status]")?.textContent.startsWith("Loading")', WAIT
    )
    await firefox.evaluate('document.getElementById("call-to").focus()')
    await firefox.type_text(bob.identity.peer_id)
    typed = 'document.getElementById("call-to").value'
    await firefox.wait_for(f"{typed} === {json.dumps(bob.identity.peer_id)}", WAIT)
    await firefox.press("Enter")  # submits the call form
    try:
        await firefox.wait_for(
            'document.querySelectorAll("tr[data-state=answered]").length === 1', WAIT
        )
    except AssertionError as error:  # say what the page showed instead
        shown = await firefox.evaluate('document.querySelector("main").innerText')
        await firefox.screenshot(ARTIFACTS / "firefox-call-failed.png")
        raise AssertionError(f"{error}; the Calls view showed: {shown!r}") from None
    await firefox.wait_for("(window.p2pPeaks || []).length >= 20", WAIT)
    peaks: list[float] = await firefox.evaluate("window.p2pPeaks.slice(-20)")
    assert len([p for p in peaks if abs(p - 660.0) < 15]) >= 15, peaks  # the page hears bob
    await firefox.screenshot(ARTIFACTS / "firefox-call.png")
    await asyncio.sleep(2.0)  # two seconds of the page's tone in bob's recording
    await firefox.evaluate(HANG_UP)
    recordings = root / "bob" / CALLS_DIR
    async with asyncio.timeout(WAIT):  # the recorder closes when the call ends
        while not list(recordings.glob("*.wav")):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    assert_tone(next(recordings.glob("*.wav")), FIREFOX_FAKE_TONE)

    # bob's node calls alice: the page's alert takes the focus, the page answers
    bob_calls = bob.node.service("calls")
    assert isinstance(bob_calls, CallsNodeService)
    record = root / "bob-dialled.wav"
    alice_id = lab.nodes["alice"].identity.peer_id
    dialled = await bob_calls.service().dial(alice_id, media_for(660.0, None, record))
    answer = f"document.querySelector(\"[data-incoming='{dialled.hex()}'] button\")"
    await firefox.wait_for(f"document.activeElement === {answer}", WAIT)
    assert await firefox.evaluate("document.activeElement.textContent") == "Answer"
    await firefox.evaluate("(() => { window.p2pPeaks = []; })()")
    # a click, not Enter: BiDi's Enter reaches the button (keydown, keypress, keyup)
    # but firefox-esr 153 synthesizes no click from it; see docs/app.md
    await firefox.evaluate(f"{answer}.click()")
    answered = f"tr[data-call='{dialled.hex()}'][data-state='answered']"
    await firefox.wait_for(f'document.querySelectorAll("{answered}").length === 1', WAIT)
    await firefox.wait_for("(window.p2pPeaks || []).length >= 20", WAIT)
    again: list[float] = await firefox.evaluate("window.p2pPeaks.slice(-20)")
    assert len([p for p in again if abs(p - 660.0) < 15]) >= 15, again
    await asyncio.sleep(2.0)
    await bob_calls.service().hangup(dialled)
    async with asyncio.timeout(WAIT):
        while not record.exists():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    assert_tone(record, FIREFOX_FAKE_TONE)


async def scenario(root: Path, executable: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert [name for _, name in socket.if_nameindex()] == ["lo", DUMMY_PEER, DUMMY]  # no way out
    async with network(root) as lab, aiohttp.ClientSession() as session:
        alice = lab.nodes["alice"]
        peer_id, fingerprint = alice.identity.peer_id, alice.identity.fingerprint
        light = write_profile(root / "firefox-light", dark=False, prefs=MEDIA_PREFS)
        async with launch_firefox(executable, light) as firefox:
            await _open_app(firefox, await one_time_link(session, root / "alice"), peer_id)
            fingerprint_shown = await firefox.evaluate(
                'document.querySelector("#fingerprint").textContent'
            )
            assert fingerprint_shown == fingerprint
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
            await _call_bob(firefox, lab, root)
        dark = write_profile(root / "firefox-dark", dark=True)
        async with launch_firefox(executable, dark) as firefox:
            await _open_app(firefox, await one_time_link(session, root / "alice"), peer_id)
            assert (
                await firefox.evaluate('matchMedia("(prefers-color-scheme: dark)").matches') is True
            )
            dark_bg = await firefox.evaluate(BACKGROUND)
            assert dark_bg != light_bg, (light_bg, dark_bg)
            await firefox.screenshot(ARTIFACTS / "firefox-identity-dark.png")


def test_app_views_keyboard_themes_and_a_call_in_firefox(tmp_path: Path) -> None:
    executable = require_tool("firefox-esr")
    require_tool("ip", "iproute2")
    require_root()
    run_offline(lambda: scenario(tmp_path, executable), dummy="10.99.0.1/24")

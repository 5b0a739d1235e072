"""The app page as the call's media endpoint, on loopback: alice's page calls bob's node.

alice's node hosts the app; Chromium (Debian's, through Playwright) opens it and
places the call from the Calls view: the page builds its own RTCPeerConnection with
the ICE servers the node returns (``/api/calls/ice``), its fake microphone plays a
440 Hz WAV, and alice's node carries the page's SDP offer as the sealed INVITE. bob is
an unattended CLI-style node (aiortc): it auto-answers with 660 Hz and records. bob's
recording must hold 440 Hz (FFT) and the page's WebAudio analyser must hear 660 Hz;
alice's node must have received no media of its own (the call is the page's). Then
bob's node calls alice: her node announces a ``CallOffer`` with bob's offer, her page
answers it with its own connection, and the tones cross again. No relay
runs here, so ICE uses host candidates on the non-loopback interface (aioice skips
127.0.0.1). Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.app.browser_calls import CallOffer
from p2pnode.app.peer_calls import CALLS_DIR, CallsNodeService, media_for
from p2pnode.connectivity.signalling import SignallingService, fetch_contact
from p2pnode.sessions.call import TERMINAL_STATES, CallState
from tests.harness.audio import read_wav, spectrum, write_tone_wav
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, Lab, _config, one_time_link

WAIT = 30.0  # a bound on every wait, never a speed assertion
WAIT_MS = WAIT * 1000
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

pytestmark = pytest.mark.slow


async def attached(lab: Lab, name: str) -> None:
    peer = lab.nodes[name]
    signalling = peer.node.service("signalling")
    assert isinstance(signalling, SignallingService)
    async with asyncio.timeout(WAIT):
        while not signalling.homes():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        while await fetch_contact(peer.dht.node, peer.identity.public_key) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    """A serving home; alice (app, calls) and bob (calls: auto-answer 660 Hz, record)."""
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            home = await lab.start("home1", _config(None, {"home": "serve"}, web=False))
            host, port = home.dht.address
            attach = {"homes": [home.identity.peer_id], "home": "attach"}
            calls: dict[str, dict[str, Any]] = {
                "alice": {"enabled": True},
                "bob": {"enabled": True, "auto_answer": True, "answer_tone": 660.0, "record": True},
            }
            for name in ("alice", "bob"):
                config = _config(f"{host}:{port}", attach, web=name == "alice")
                config["calls"] = calls[name]
                await lab.start(name, config)
                await attached(lab, name)
            yield lab
        finally:
            lab.stop_all()


async def scenario(root: Path) -> None:
    chromium = require_tool("chromium")
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tone = root / "page-440.wav"
    write_tone_wav(tone, 440.0, 20.0)
    async with (
        network(root) as lab,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=[*FLAGS, f"--use-file-for-fake-audio-capture={tone}"],
        )
        alice, bob = lab.nodes["alice"], lab.nodes["bob"]
        page = await (await browser.new_context()).new_page()
        await page.goto(await one_time_link(session, root / "alice"))
        await expect(page.locator("#peer-id")).to_have_text(alice.identity.peer_id, timeout=WAIT_MS)

        plan = await page.evaluate("""async () => (await fetch("/api/calls/ice")).json()""")
        assert isinstance(plan["ice_servers"], list)  # no relay here: host candidates only
        assert not any("google" in s["urls"] for s in plan["ice_servers"])

        await page.click("#nav-calls")
        await page.fill("#call-to", bob.identity.peer_id)
        await page.click("#call-place")
        row = page.locator("tr[data-state='answered']")
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        await expect(row.get_by_role("button", name="Mute")).to_be_visible(timeout=WAIT_MS)
        call_id = await row.get_attribute("data-call")
        assert call_id is not None

        # the page hears bob's 660 Hz: 20 analyser peaks, most within one FFT bin or two
        await page.wait_for_function(
            "() => (window.p2pPeaks || []).length >= 20", timeout=WAIT_MS, polling=200
        )
        peaks: list[float] = await page.evaluate("() => window.p2pPeaks.slice(-20)")
        near = [p for p in peaks if abs(p - 660.0) < 15]
        assert len(near) >= 15, peaks
        await page.screenshot(path=ARTIFACTS / "calls-page-endpoint.png", full_page=True)

        calls = alice.node.service("calls")
        assert isinstance(calls, CallsNodeService)
        service = calls.service()
        assert service.is_browser(bytes.fromhex(call_id))
        assert service.statistics(bytes.fromhex(call_id)).frames == 0  # the page's media
        sdp = service.remote_sdp(bytes.fromhex(call_id))
        assert sdp is not None and "a=fingerprint:sha-256" in sdp  # bob's aiortc answer

        await asyncio.sleep(2.0)  # two seconds of the page's tone in bob's recording
        await row.get_by_role("button", name="Hang up").click()
        await expect(page.locator(f"tr[data-call='{call_id}']")).to_have_attribute(
            "data-state", "hung-up", timeout=WAIT_MS
        )
        recordings = root / "bob" / CALLS_DIR
        async with asyncio.timeout(WAIT):  # the recorder closes when the call ends
            while not list(recordings.glob("*.wav")):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        assert_tone(next(recordings.glob("*.wav")), 440.0)

        # bob's node calls alice: her node announces the offer, her page answers it
        too_big = await page.evaluate(BIG_ANSWER, call_id)
        assert too_big == 413  # an SDP over the call signal's bound is refused, never sent
        bob_calls = bob.node.service("calls")
        assert isinstance(bob_calls, CallsNodeService)
        record = root / "bob-dialled.wav"
        await page.click("#nav-status")  # the alert shows over any view, not only Calls
        await expect(page.locator("main h2")).to_have_text("Status", timeout=WAIT_MS)
        with alice.node.subscribe() as events:
            dialled = await bob_calls.service().dial(
                alice.identity.peer_id, media_for(660.0, None, record)
            )
            offer = await offer_event(events, dialled.hex())
        assert offer.peer_id == bob.identity.peer_id and "a=fingerprint:sha-256" in offer.sdp
        incoming = page.locator(f"[data-incoming='{dialled.hex()}']")
        await expect(incoming).to_be_visible(timeout=WAIT_MS)
        await expect(incoming).to_have_attribute("role", "alertdialog")
        assert await page.locator("#incoming-alert").get_attribute("aria-live") == "assertive"
        answer_button = incoming.get_by_role("button", name="Answer")
        await expect(answer_button).to_be_focused(timeout=WAIT_MS)  # keyboard: Enter answers
        await page.wait_for_function(RINGS, timeout=WAIT_MS, polling=200)  # 440 + 480 Hz
        await page.screenshot(path=ARTIFACTS / "incoming-call-alert.png", full_page=True)
        await page.evaluate("() => { window.p2pPeaks = []; }")
        await page.keyboard.press("Enter")
        await expect(page.locator("main h2")).to_have_text("Calls", timeout=WAIT_MS)
        assert await page.evaluate("() => window.p2pRinging") is False  # answered: silent
        answered = page.locator(f"tr[data-call='{dialled.hex()}'][data-state='answered']")
        await expect(answered).to_have_count(1, timeout=WAIT_MS)
        await expect(answered).to_contain_text("direct", timeout=WAIT_MS)  # the page's ICE pair
        await page.wait_for_function(
            "() => (window.p2pPeaks || []).length >= 20", timeout=WAIT_MS, polling=200
        )
        again: list[float] = await page.evaluate("() => window.p2pPeaks.slice(-20)")
        assert len([p for p in again if abs(p - 660.0) < 15]) >= 15, again
        assert service.statistics(dialled).frames == 0  # alice's node held no media
        await asyncio.sleep(2.0)
        await bob_calls.service().hangup(dialled)
        async with asyncio.timeout(WAIT):
            while not record.exists():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        assert_tone(record, 440.0)
        await page.screenshot(path=ARTIFACTS / "calls-page-answered.png", full_page=True)

        # a call that rings while the person reads chat: Escape declines it
        await page.click("#nav-chat")
        declined = await bob_calls.service().dial(
            alice.identity.peer_id, media_for(660.0, None, None)
        )
        ringing = page.locator(f"[data-incoming='{declined.hex()}']")
        await expect(ringing.get_by_role("button", name="Answer")).to_be_focused(timeout=WAIT_MS)
        await page.keyboard.press("Escape")
        await expect(ringing).to_have_count(0, timeout=WAIT_MS)
        async with asyncio.timeout(WAIT):
            while bob_calls.last[declined].state not in TERMINAL_STATES:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert bob_calls.last[declined].state is CallState.DECLINED
        await browser.close()


RINGS = """() => (window.p2pRingPeaks || []).filter((p) => Math.abs(p - 460) < 35).length >= 5"""
BIG_ANSWER = """async (callId) => (await fetch(`/api/calls/${callId}/answer`, {method: "POST",
  headers: {"Content-Type": "application/json"},
  body: JSON.stringify({sdp: "v=0\\r\\n" + "\u00e9".repeat(9000)})})).status"""


async def offer_event(events: asyncio.Queue[object], call_id: str) -> CallOffer:
    async with asyncio.timeout(WAIT):
        while True:
            event = await events.get()
            if isinstance(event, CallOffer) and event.call_id == call_id:
                return event


def assert_tone(path: Path, expected: float) -> None:
    samples, rate = read_wav(path)
    heard = spectrum(samples[rate // 2 :], rate)  # the first half second: set-up
    assert abs(heard.dominant_hz - expected) < 15, (path.name, heard)
    assert heard.dominance > 10, (path.name, heard)


def test_app_page_is_the_media_endpoint_of_a_call_to_an_aiortc_node(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

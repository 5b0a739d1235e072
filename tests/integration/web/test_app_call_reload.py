"""A page reload mid-call keeps the call: the reloaded page re-attaches its media leg.

alice's page (Chromium, a fake microphone playing 440 Hz) calls bob's unattended node
(aiortc, auto-answer 660 Hz, recording). Mid-call the page reloads: its
RTCPeerConnection is gone, the call is not (alice's node keeps its signalling, bob's
leg stays). The reloaded page finds the answered call in ``/api/calls``, sees it is a
page's call with no connection here and re-attaches (``/app/calls/ID/attach``: a fresh
connection offered as a re-offer, bob re-answers). Then: the page hears 660 Hz again
(its analyser, FFT), bob's recording ends in 440 Hz (the seconds after the reload), the
call id is the one placed, bob's node never reported the call ended, and the reloaded
page's Hang up ends the call on both sides. On the way, a second page attaches too and
replaces the first (one page leg per call; the first drops its connection and does
not take the call back), then closes, and the first page reloads and attaches again.
Then bob's node calls alice, her page answers and reloads: the callee page re-attaches
the same way (its attach is a callee's re-offer) and bob's recording ends in 440 Hz.
Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from p2pnode.app.peer_calls import CALLS_DIR, CallsNodeService, media_for
from p2pnode.sessions.call import TERMINAL_STATES
from p2pnode.sessions.call_config import CallUpdate
from tests.harness.audio import read_wav, spectrum, write_tone_wav
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, one_time_link
from tests.integration.web.test_app_call import FLAGS, WAIT, WAIT_MS, network

pytestmark = pytest.mark.slow

HEARS_660 = """() => (window.p2pPeaks || []).filter((p) => Math.abs(p - 660) < 15).length >= 15"""


async def collect(events: asyncio.Queue[object], call_id: bytes, seen: list[CallUpdate]) -> None:
    while True:
        event = await events.get()
        if isinstance(event, CallUpdate) and event.call_id == call_id:
            seen.append(event)


async def scenario(root: Path) -> None:
    chromium = require_tool("chromium")
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tone = root / "page-440.wav"
    write_tone_wav(tone, 440.0, 30.0)
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
        alice_calls = alice.node.service("calls")
        bob_calls = bob.node.service("calls")
        assert isinstance(alice_calls, CallsNodeService)
        assert isinstance(bob_calls, CallsNodeService)
        page = await (await browser.new_context()).new_page()
        await page.goto(await one_time_link(session, root / "alice"))
        await expect(page.locator("#peer-id")).to_have_text(alice.identity.peer_id, timeout=WAIT_MS)
        await page.click("#nav-calls")
        await page.fill("#call-to", bob.identity.peer_id)
        await page.click("#call-place")
        row = page.locator("tr[data-state='answered']")
        await expect(row.get_by_role("button", name="Mute")).to_be_visible(timeout=WAIT_MS)
        call_hex = await row.get_attribute("data-call")
        assert call_hex is not None
        call_id = bytes.fromhex(call_hex)
        await page.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
        service = alice_calls.service()
        assert service.page_leg(call_id) == 0  # the dialling page's own leg

        seen: list[CallUpdate] = []
        with bob.node.subscribe() as events:
            watcher = asyncio.create_task(collect(events, call_id, seen))
            await page.reload()
            reloaded = page.locator(f"tr[data-call='{call_hex}'][data-state='answered']")
            # Mute shows only for a call with a connection in this page: the re-attached leg
            await expect(reloaded.get_by_role("button", name="Mute")).to_be_visible(timeout=WAIT_MS)
            await page.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
            assert service.page_leg(call_id) == 1  # one attach: the reloaded page's leg
            # a second page attaches too: it replaces the first (one page leg per call),
            # and the replaced page closes its connection and never takes the call back
            second = await page.context.new_page()
            await second.goto(page.url)
            await expect(
                second.locator(f"tr[data-call='{call_hex}']").get_by_role("button", name="Mute")
            ).to_be_visible(timeout=WAIT_MS)
            await second.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
            await expect(reloaded.get_by_role("button", name="Mute")).to_have_count(
                0, timeout=WAIT_MS
            )
            assert service.page_leg(call_id) == 2
            await second.close()  # the call stays up without any page leg
            await page.reload()  # and the reloaded page re-attaches once more
            await expect(reloaded.get_by_role("button", name="Mute")).to_be_visible(timeout=WAIT_MS)
            await page.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
            assert service.page_leg(call_id) == 3
            await asyncio.sleep(2.0)  # two seconds of the page's tone after the reload
            assert bob_calls.service().state(call_id).value == "answered"
            await page.screenshot(path=ARTIFACTS / "calls-page-reloaded.png", full_page=True)
            await reloaded.get_by_role("button", name="Hang up").click()
            await expect(page.locator(f"tr[data-call='{call_hex}']")).to_have_attribute(
                "data-state", "hung-up", timeout=WAIT_MS
            )
            async with asyncio.timeout(WAIT):
                while bob_calls.last[call_id].state not in TERMINAL_STATES:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            watcher.cancel()
        ends = [u for u in seen if u.state in TERMINAL_STATES]
        assert [u.state.value for u in ends] == ["hung-up"], [u.state.value for u in seen]
        assert seen[-1] is ends[0]  # the only end bob saw is the reloaded page's hang-up
        assert list(alice_calls.last) == [call_id]  # the same call throughout
        recordings = root / "bob" / CALLS_DIR
        async with asyncio.timeout(WAIT):  # the recorder closes when the call ends
            while not list(recordings.glob("*.wav")):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        assert_tail(next(recordings.glob("*.wav")), 440.0)

        # bob calls, the page answers, reloads: the callee page re-attaches too
        record = root / "bob-dialled.wav"
        dialled = await bob_calls.service().dial(
            alice.identity.peer_id, media_for(660.0, None, record)
        )
        incoming = page.locator(f"[data-incoming='{dialled.hex()}']")
        await incoming.get_by_role("button", name="Answer").click(timeout=WAIT_MS)
        answered = page.locator(f"tr[data-call='{dialled.hex()}'][data-state='answered']")
        await expect(answered.get_by_role("button", name="Mute")).to_be_visible(timeout=WAIT_MS)
        await page.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
        await page.reload()
        await expect(answered.get_by_role("button", name="Mute")).to_be_visible(timeout=WAIT_MS)
        await page.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
        assert service.page_leg(dialled) == 1
        await asyncio.sleep(2.0)
        assert bob_calls.service().state(dialled).value == "answered"
        await answered.get_by_role("button", name="Hang up").click()
        async with asyncio.timeout(WAIT):
            while not record.exists():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        assert_tail(record, 440.0)
        await browser.close()


def assert_tail(path: Path, expected: float) -> None:
    """The last 1.5 s of a recording (after the reload) hold ``expected`` Hz (FFT)."""
    samples, rate = read_wav(path)
    tail = spectrum(samples[-int(rate * 1.5) :], rate)
    assert abs(tail.dominant_hz - expected) < 15, tail
    assert tail.dominance > 10, tail


def test_a_reloaded_page_reattaches_to_its_live_call(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

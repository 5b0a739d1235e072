"""An app page's call moves to a second relay: the page makes every new connection itself.

On loopback: a serving home; alice (calls + the app, her page in Chromium with
a 440 Hz fake microphone); bob, whose node carries an aiortc ``CallService``
driven on its own "call" signalling channel (as the bridge tests do) with two
relay-only media paths, relay A then relay B (our TURN servers on 127.0.0.1).
Every packet bob sends or receives crosses one of those relays; the page uses
host candidates (``--allow-loopback-in-peer-connection``: the relays only relay
to 127.0.0.0/8).

1. bob calls alice; her page answers. Relay A dies mid-call; bob hears silence
   and re-offers on relay B. alice's node must hold that re-offer for the page
   (before this, it re-answered at once with the page's first SDP, an answer
   for a connection that no longer matched bob's, so audio never came back);
   the page answers from a fresh connection, and tones flow again: bob's node
   counts new frames on relay B and the page hears 660 Hz again.
2. alice's page calls bob while relay A is dead: bob answers on relay A (his
   first path) and nothing arrives; the page gives up on that connection,
   re-offers from a fresh one, bob answers on relay B, and the tones cross
   (the page hears 660 Hz, bob's recording holds 440 Hz by FFT).

Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from p2pnode.connectivity.signalling import SignalChannel, SignallingService
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService, IceServer, MediaPath
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav, spectrum, write_tone_wav
from tests.harness.tools import require_tool
from tests.integration.calls.callpair import turn_relay
from tests.integration.web.test_app_browser import ARTIFACTS, Lab, _config, one_time_link
from tests.integration.web.test_app_call import FLAGS, attached

pytestmark = pytest.mark.slow

WAIT = 40.0  # a bound on every wait, never a speed assertion
WAIT_MS = WAIT * 1000
USERS = {"bob": "bob-secret"}
HEARS_660 = """() => { const p = (window.p2pPeaks || []).slice(-20);
  return p.length >= 20 && p.filter((f) => Math.abs(f - 660) < 15).length >= 15; }"""


REFUSALS = """async (id) => {
  const post = async (path, body) => (await fetch(path, {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})).status;
  const sdp = "v=0\\r\\n";
  return {
    ended: await post(`/app/calls/${id}/reanswer`, {generation: 1, sdp}),
    reoffer_ended: await post(`/app/calls/${id}/reoffer`, {sdp}),
    no_generation: await post(`/app/calls/${id}/reanswer`, {sdp}),
    bad_id: await post(`/app/calls/not-hex/reoffer`, {sdp}),
    unknown: await post(`/app/calls/${"00".repeat(16)}/reoffer`, {sdp}),
    too_big: await post(`/app/calls/${id}/reoffer`, {sdp: "\u00e9".repeat(9000)}),
  };
}"""


def relay_path(port: int, name: str) -> MediaPath:
    server = IceServer(f"turn:127.0.0.1:{port}?transport=udp", "bob", USERS["bob"])
    return MediaPath((server,), relay_only=True, name=name)


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            home = await lab.start("home1", _config(None, {"home": "serve"}, web=False))
            host, port = home.dht.address
            attach = {"homes": [home.identity.peer_id], "home": "attach"}
            alice = _config(f"{host}:{port}", attach, web=True)
            alice["calls"] = {"enabled": True}
            await lab.start("alice", alice)
            await lab.start("bob", _config(f"{host}:{port}", attach, web=False))
            for name in ("alice", "bob"):
                await attached(lab, name)
            yield lab
        finally:
            lab.stop_all()


async def pump(channel: SignalChannel, calls: CallService) -> None:
    while True:
        delivery = await channel.receive()
        await calls.handle_signal(delivery.sender, delivery.payload)


async def frames_after(calls: CallService, call_id: bytes, frames: int) -> None:
    async with asyncio.timeout(WAIT):
        while calls.statistics(call_id).frames < frames:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def scenario(root: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tone = root / "page-440.wav"
    write_tone_wav(tone, 440.0, 60.0)
    answered_record = root / "bob-answered.wav"
    async with (
        network(root) as lab,
        turn_relay(USERS) as (relay_a, port_a),
        turn_relay(USERS) as (_relay_b, port_b),
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        alice, bob = lab.nodes["alice"], lab.nodes["bob"]
        signalling = bob.node.service("signalling")
        assert isinstance(signalling, SignallingService)
        channel = signalling.channel("call")  # bob's node runs no calls service of its own
        config = CallConfig(
            paths=(relay_path(port_a, "relay-a"), relay_path(port_b, "relay-b")), auto_answer=True
        )
        bob_calls = CallService(
            bob.identity.peer_id,
            config,
            channel.send,
            answer_media=lambda: CallMedia(ToneSource(660.0), answered_record),
        )
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=[
                *FLAGS,
                "--allow-loopback-in-peer-connection",
                f"--use-file-for-fake-audio-capture={tone}",
            ],
        )
        async with bob_calls, asyncio.TaskGroup() as group:
            pumping = group.create_task(pump(channel, bob_calls))
            page = await (await browser.new_context()).new_page()
            await page.goto(await one_time_link(session, root / "alice"))
            await expect(page.locator("#peer-id")).to_have_text(
                alice.identity.peer_id, timeout=WAIT_MS
            )

            # 1. bob calls; relay A dies mid-call; bob re-offers on B; the page re-answers
            call = await bob_calls.dial(
                alice.identity.peer_id, CallMedia(ToneSource(660.0), root / "bob-dialled.wav")
            )
            incoming = page.locator(f"[data-incoming='{call.hex()}']")
            await incoming.get_by_role("button", name="Answer").click(timeout=WAIT_MS)
            await frames_after(bob_calls, call, 50)  # the page's audio through relay A
            await page.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
            assert "relay-a" in (bob_calls.path(call) or "")
            relay_a.close()  # the relay carrying the call dies
            async with asyncio.timeout(WAIT):
                while bob_calls.statistics(call).failovers < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await page.evaluate("() => { window.p2pPeaks = []; }")
            moved = bob_calls.statistics(call).frames
            await frames_after(bob_calls, call, moved + 100)  # audio back, from the new answer
            assert "relay-b" in (bob_calls.path(call) or "")
            await page.wait_for_function(HEARS_660, timeout=WAIT_MS, polling=200)
            await bob_calls.hangup(call)
            await expect(page.locator(f"tr[data-call='{call.hex()}']")).to_have_attribute(
                "data-state", "hung-up", timeout=WAIT_MS
            )

            # the renegotiation routes refuse what does not fit, and change nothing
            refused = await page.evaluate(REFUSALS, call.hex())
            assert refused == {
                "ended": 409,  # the call is over: no re-offer waits, none can be made
                "reoffer_ended": 409,
                "no_generation": 400,
                "bad_id": 400,
                "unknown": 404,
                "too_big": 413,
            }, refused

            # 2. the page calls bob, whose first path is the dead relay: the page re-offers
            await page.evaluate("() => { window.p2pPeaks = []; }")
            await page.click("#nav-calls")
            await page.fill("#call-to", bob.identity.peer_id)
            await page.click("#call-place")
            row = page.locator("tr[data-state='answered']")
            await expect(row).to_have_count(1, timeout=WAIT_MS)
            await page.wait_for_function(HEARS_660, timeout=WAIT_MS * 2, polling=200)
            await page.screenshot(path=ARTIFACTS / "calls-page-failover.png", full_page=True)
            await asyncio.sleep(2.0)  # two seconds of the page's tone through relay B
            await row.get_by_role("button", name="Hang up").click()
            async with asyncio.timeout(WAIT):
                while not answered_record.exists():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
            pumping.cancel()
        await browser.close()
    samples, rate = read_wav(answered_record)
    heard = spectrum(samples[-2 * rate :], rate)  # the end of the call, on relay B
    assert abs(heard.dominant_hz - 440.0) < 15, heard
    assert heard.dominance > 10, heard


def test_page_calls_move_to_the_second_relay_with_new_connections(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path, require_tool("chromium")))

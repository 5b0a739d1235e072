"""The app's SIP equipment view and an app call to a desk phone through the bridge, on loopback.

Three nodes: a serving home; ``gw``, whose ``p2pnode run`` hosts the SIP gateway
(``[sip]``, MD5 digest for baresip) with the bridge for ``alice``
(``bridge_hosted``: the runtime builds her hosted identity's signalling, calls
service and bridge user agent, nothing by hand) and the app; ``carol``, a peer
with calls and the app.

SIP equipment (gw's page): baresip 1.0 registers as alice, and so does our own
user agent with a User-Agent of its own; the page lists both devices with their
contact, user agent, source address and expiry (from the running registrar
through ``/api/sip``). A password reset from the page shows a new password once;
the old one then fails our UA's next REGISTER, the new one succeeds, and the
device leaves the list when it unregisters.

The call (carol's page): the page dials alice's hosted identity with its own
RTCPeerConnection (fake microphone: 440 Hz); the bridge rings baresip, which
auto-answers playing 660 Hz. The page's analyser must hear 660 Hz and
baresip's recording must hold 440 Hz (FFT); the call row shows the page's ICE
path. Then a gateway peer calls carol relaying a foreign SIP caller (a CALLER
signal, unverified; sent by a ``BridgedCallService`` on gw's own "call"
channel, as the foreign bridge does): her alert and call row say
"sip:carrier@other.example via SIP gateway ..., caller unverified", and the
digits the gateway passes on (4, 2) show as keyed. Every wait is bounded;
nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.app.sip_service import SipService
from p2pnode.app.web.sip_accounts import ACCOUNTS_FILE
from p2pnode.connectivity.signalling import SignalChannel, SignallingService, fetch_contact
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import BridgedCallService
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError
from p2pnode.sessions.call_config import CallConfig, CallMedia
from p2pnode.sessions.call_signal import RelayedCaller
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav, spectrum, write_tone_wav
from tests.harness.baresip import finished_recording, write_baresip_config
from tests.harness.tools import require_tool
from tests.integration.web.test_app_browser import ARTIFACTS, Lab, _config, one_time_link
from tests.integration.web.test_app_call import FLAGS, attached

pytestmark = [pytest.mark.slow, pytest.mark.interop]

WAIT = 30.0  # a bound on every wait, never a speed assertion
WAIT_MS = WAIT * 1000
DOMAIN = "gw.test"
UA_NAME = "p2pnode-test-phone/1.0"
SIP_ACCOUNTS = """async () => (await fetch("/app/sip")).json()"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sip_section() -> dict[str, Any]:
    return {
        "enabled": True,
        "domain": DOMAIN,
        "listen": "127.0.0.1:0",
        "digest": ["MD5"],  # baresip's libre gives up on a SHA-256 challenge
        "claim_logins": False,
        "bridge_hosted": ["alice"],
        "foreign_calls": False,
    }


@asynccontextmanager
async def network(root: Path, passwords: dict[str, str]) -> AsyncIterator[Lab]:
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            home = await lab.start("home1", _config(None, {"home": "serve"}, web=False))
            host, port = home.dht.address
            attach = {"homes": [home.identity.peer_id], "home": "attach"}
            (root / "gw").mkdir()
            store = AccountStore.open(root / "gw" / ACCOUNTS_FILE, DOMAIN)
            passwords["alice"] = store.add("alice", None, randbytes=os.urandom)[1]
            store.close()
            gw = _config(f"{host}:{port}", attach, web=True)
            gw["sip"] = sip_section()
            await lab.start("gw", gw)
            carol = _config(f"{host}:{port}", attach, web=True)
            carol["calls"] = {"enabled": True}
            await lab.start("carol", carol)
            for name in ("gw", "carol"):
                await attached(lab, name)
            store = AccountStore.open(root / "gw" / ACCOUNTS_FILE, None)
            account = store.get("alice")
            store.close()
            assert account is not None
            hosted = identity_of(account)
            async with asyncio.timeout(WAIT):  # the bridge's signalling for alice is up
                while await fetch_contact(lab.nodes["carol"].dht.node, hosted.public_key) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            yield lab
        finally:
            lab.stop_all()


async def pump_calls(channel: SignalChannel, calls: BridgedCallService) -> None:
    while True:
        delivery = await channel.receive()
        await calls.handle_signal(delivery.sender, delivery.payload)


async def scenario(root: Path, baresip: str, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tone = root / "page-440.wav"
    write_tone_wav(tone, 440.0, 30.0)
    passwords: dict[str, str] = {}
    async with (
        network(root, passwords) as lab,
        aiohttp.ClientSession() as session,
        async_playwright() as playwright,
    ):
        gw, carol = lab.nodes["gw"], lab.nodes["carol"]
        sip = gw.node.service("sip")
        assert isinstance(sip, SipService) and sip.gateway is not None
        server = sip.gateway.address
        assert server is not None
        records = write_baresip_config(
            root / "baresip",
            listen=f"127.0.0.1:{free_udp_port()}",
            account=f"alice@{DOMAIN}",
            password=passwords["alice"],
            outbound=f"{server[0]}:{server[1]}",
            tone_hz=660,
            net_interface="127.0.0.1",
        )
        phone = await asyncio.create_subprocess_exec(
            baresip, "-f", str(root / "baresip"), "-t", "120",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        desk = SipUserAgent("alice", passwords["alice"], DOMAIN, server, user_agent=UA_NAME)
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=[*FLAGS, f"--use-file-for-fake-audio-capture={tone}"]
        )
        try:
            await desk.start()
            await desk.register(300)
            # ---- SIP equipment on gw's page: both devices, then a password reset
            page = await (await browser.new_context()).new_page()
            await page.goto(await one_time_link(session, root / "gw"))
            await expect(page.locator("#peer-id")).to_have_text(
                gw.identity.peer_id, timeout=WAIT_MS
            )
            await page.click("#nav-sip")
            devices = page.locator("#sip-devices tbody tr[data-device='alice']")
            await expect(devices).to_have_count(2, timeout=WAIT_MS)  # baresip + our UA
            ours = devices.filter(has_text=UA_NAME)
            await expect(ours).to_have_count(1)
            assert desk.address is not None
            await expect(ours.locator(".source")).to_have_text(f"127.0.0.1:{desk.address[1]}")
            expires = int((await ours.locator(".expires").text_content() or "0").split()[0])
            assert 0 < expires <= 300
            baresip_row = devices.filter(has_not_text=UA_NAME)
            await expect(baresip_row.locator(".user-agent")).to_contain_text("baresip")
            await expect(page.locator("tr[data-login='alice'] [data-devices='2']")).to_have_count(1)
            await page.screenshot(path=ARTIFACTS / "sip-devices.png", full_page=True)

            await page.get_by_role("button", name="New password for alice").click()
            await page.get_by_role("button", name="Reset alice's password").click()
            await expect(page.locator("#sip-made")).to_contain_text("New password")
            new_password = (await page.locator("#sip-password").text_content() or "").strip()
            assert new_password and new_password != passwords["alice"]
            await page.screenshot(path=ARTIFACTS / "sip-password-reset.png", full_page=True)
            with pytest.raises(UaError):  # the device still on the old password is refused
                await desk.register(300)
            desk.password = new_password
            await desk.register(300)
            await desk.register(0)  # the desk phone leaves: only baresip stays listed
            await expect(devices).to_have_count(1, timeout=WAIT_MS)
            await expect(devices.locator(".user-agent")).to_contain_text("baresip")

            # ---- carol's page calls alice's desk phone through the runtime's bridge
            alice_hosted = next(
                a["peer_id"] for a in (await page.evaluate(SIP_ACCOUNTS))["accounts"]
                if a["login"] == "alice"
            )  # fmt: skip
            calling = await (await browser.new_context()).new_page()
            await calling.goto(await one_time_link(session, root / "carol"))
            await calling.click("#nav-calls")
            await calling.fill("#call-to", alice_hosted)
            await calling.click("#call-place")
            row = calling.locator("tr[data-state='answered']")
            await expect(row).to_have_count(1, timeout=WAIT_MS)
            await expect(row).to_contain_text("direct", timeout=WAIT_MS)  # the page's pair
            await calling.wait_for_function(
                "() => (window.p2pPeaks || []).length >= 20", timeout=WAIT_MS, polling=200
            )
            peaks: list[float] = await calling.evaluate("() => window.p2pPeaks.slice(-20)")
            assert len([p for p in peaks if abs(p - 660.0) < 15]) >= 15, peaks
            await calling.screenshot(path=ARTIFACTS / "calls-to-desk-phone.png", full_page=True)
            await asyncio.sleep(2.0)  # two seconds of the page's tone at the phone
            await row.get_by_role("button", name="Hang up").click()
            await expect(calling.locator("tr[data-state='hung-up']")).to_have_count(
                1, timeout=WAIT_MS
            )
            recording = await asyncio.to_thread(finished_recording, records)

            signalling = gw.node.service("signalling")
            assert isinstance(signalling, SignallingService)
            channel = signalling.channel("call")  # gw runs no calls service of its own
            hosted = BridgedCallService(gw.identity.peer_id, CallConfig(), channel.send)
            async with hosted, asyncio.TaskGroup() as group:
                pump = group.create_task(pump_calls(channel, hosted))
                # a foreign SIP caller through the gateway, as the bridge relays one: the
                # alert and the call row say who, via which gateway, and that it is unverified
                relayed = await hosted.dial(carol.identity.peer_id, CallMedia(ToneSource(520.0)))
                await hosted.send_caller(relayed, RelayedCaller("sip:carrier@other.example", False))
                alert = calling.locator(f"[data-incoming='{relayed.hex()}']")
                await expect(alert).to_contain_text(
                    "sip:carrier@other.example via SIP gateway", timeout=WAIT_MS
                )
                await expect(alert).to_contain_text("caller unverified")
                await alert.get_by_role("button", name="Answer").click()
                answered = calling.locator(
                    f"tr[data-call='{relayed.hex()}'][data-state='answered']"
                )
                await expect(answered).to_have_count(1, timeout=WAIT_MS)
                for digit in "42":  # the phone's keys, as the bridge passes them on
                    await hosted.send_dtmf(relayed, digit)
                await expect(answered.locator(".dtmf")).to_have_text("keyed 42", timeout=WAIT_MS)
                await expect(answered.locator(".with")).to_contain_text("caller unverified")
                await calling.screenshot(
                    path=ARTIFACTS / "calls-relayed-caller.png", full_page=True
                )
                await hosted.hangup(relayed)
                pump.cancel()
            samples, rate = read_wav(recording)
            heard = spectrum(samples[rate // 2 :], rate)
            assert abs(heard.dominant_hz - 440.0) < 15, heard  # the phone heard the page
            assert heard.dominance > 10, heard
        finally:
            await browser.close()
            await desk.close()
            if phone.returncode is None:
                phone.terminate()
            with suppress(TimeoutError):
                await asyncio.wait_for(phone.wait(), 10)
            if phone.returncode is None:
                phone.kill()
                await phone.wait()


def test_app_lists_sip_devices_resets_a_password_and_calls_a_desk_phone(tmp_path: Path) -> None:
    baresip = require_tool("baresip")
    chromium = require_tool("chromium")
    asyncio.run(scenario(tmp_path, baresip, chromium))

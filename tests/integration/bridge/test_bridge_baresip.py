"""baresip (a real desk-phone stack) registered as ``alice`` is rung by a P2P peer via the bridge.

On loopback: the gateway in this process (MD5 digest only: baresip's libre
refuses a SHA-256 challenge), baresip 1.0 registered as alice (``net_interface 127.0.0.1``:
else its SDP names the host's other address while its RTP leaves from
127.0.0.1, and the gateway's anchor drops it as "source not the signalled
address") with ``answermode=auto``, PCMU, playing 440 Hz with ``ausine`` and recording what
it hears with ``sndfile``; the bridge and two calls services as in the other
bridge tests; the peer plays 660 Hz and records. Each recording must hold the
other side's tone (FFT); with PCMU on the P2P leg the phone's payloads pass the
bridge untouched, with opus they are transcoded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import (
    BridgedCallService,
    BridgeEvent,
    BridgeUserAgent,
    SipP2pBridge,
)
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav, spectrum
from tests.harness.baresip import finished_recording, write_baresip_config
from tests.harness.tools import require_tool
from tests.integration.bridge.board import Board
from tests.integration.bridge.test_bridge_call_loopback import (
    ALICE_ID,
    PEER_ID,
    loopback_ice,
)

pytestmark = pytest.mark.interop
DOMAIN = "gw.test"
WAIT = 20.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def baresip_config(directory: Path, password: str, server: tuple[str, int]) -> Path:
    return write_baresip_config(
        directory,
        listen=f"127.0.0.1:{free_udp_port()}",
        account=f"alice@{DOMAIN}",
        password=password,
        outbound=f"{server[0]}:{server[1]}",
        net_interface="127.0.0.1",
    )


def assert_tone(path: Path, expected_hz: float) -> None:
    samples, rate = read_wav(path)
    assert samples.size > rate, f"recording too short: {samples.size / rate:.2f} s"
    found = spectrum(samples[int(0.4 * rate) :], rate)
    assert abs(found.dominant_hz - expected_hz) < 8, found
    assert found.dominance > 10, found


async def scenario(baresip: str, tmp_path: Path, codec: str) -> tuple[Path, list[BridgeEvent]]:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN, digest_algorithms=(Algorithm.MD5,)), store)
    await gateway.start()
    assert gateway.address is not None
    records = baresip_config(tmp_path / "baresip", alice_password, gateway.address)
    phone = await asyncio.create_subprocess_exec(
        baresip, "-f", str(tmp_path / "baresip"), "-t", "60",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bridge_ua = BridgeUserAgent("bob", bob_password, DOMAIN, gateway.address)
    board = Board((ALICE_ID, PEER_ID))
    config = CallConfig(audio_codecs=(codec,))  # the P2P leg; the phone's is PCMU
    events: list[BridgeEvent] = []
    try:
        await bridge_ua.start()
        async with asyncio.timeout(WAIT):
            # baresip registers (challenge, MD5); the gateway has no event to await
            while not gateway.registrar.bindings("alice", gateway_now(gateway)):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        hosted = BridgedCallService(ALICE_ID, config, board.sender(ALICE_ID))
        async with (
            hosted,
            CallService(PEER_ID, config, board.sender(PEER_ID)) as peer,
            asyncio.TaskGroup() as group,
        ):
            board.services = {ALICE_ID: hosted, PEER_ID: peer}
            tasks = [group.create_task(board.pump(name)) for name in (ALICE_ID, PEER_ID)]
            bridge = SipP2pBridge(hosted, bridge_ua, "alice")
            tasks.append(group.create_task(bridge.run()))
            call_id = await peer.dial(ALICE_ID, CallMedia(ToneSource(660.0), tmp_path / "peer.wav"))
            async with asyncio.timeout(WAIT):
                await peer.wait_state(call_id, {CallState.ANSWERED})
                await peer.wait_first_frame(call_id)
            await asyncio.sleep(2.5)
            await peer.hangup(call_id)
            async with asyncio.timeout(WAIT):
                while "ended" not in {event.what for event in events}:
                    events.append(await bridge.events.get())
            for task in tasks:
                task.cancel()
        await asyncio.sleep(0.5)  # baresip closes its recording after the BYE
    finally:
        if phone.returncode is None:
            phone.terminate()
        try:
            await asyncio.wait_for(phone.wait(), 10)
        except TimeoutError:
            phone.kill()
            await asyncio.wait_for(phone.wait(), 5)
        await bridge_ua.close()
        await gateway.stop()
    return records, events


def gateway_now(gateway: SipGateway) -> float:
    return gateway._now()


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["PCMU", "opus"])
def test_baresip_rings_for_a_p2p_caller_and_both_hear_the_other(codec: str, tmp_path: Path) -> None:
    baresip = require_tool("baresip")
    with loopback_ice():
        records, events = asyncio.run(scenario(baresip, tmp_path, codec))
    assert_tone(tmp_path / "peer.wav", 440.0)  # the peer heard baresip's sine
    assert_tone(finished_recording(records), 660.0)  # baresip heard the peer
    ended = next(event for event in events if event.what == "ended")
    counts = dict(item.split("=") for item in ended.detail.split())
    if codec == "PCMU":  # G.711 on both legs: untouched
        assert int(counts["passthrough"]) > 50 and int(counts["transcoded"]) == 0
    else:  # opus on the P2P leg: decoded and re-encoded
        assert int(counts["transcoded"]) > 50 and int(counts["passthrough"]) == 0

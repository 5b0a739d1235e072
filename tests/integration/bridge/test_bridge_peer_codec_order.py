"""A peer calling a phone: the bridge's INVITE lists the peer's codecs first, in its order.

One gateway, one bridge, one call (baresip_rig.py, loopback). The peer (an
aiortc calls service, 660 Hz) dials ``alice`` offering PCMA first, then
opus, no PCMU; alice's baresip (440 Hz) speaks PCMU and PCMA. Before, the
bridge rang the phone with its static list (PCMU first): the phone took
PCMU, which the peer never offered, so the call was transcoded. Now the
INVITE lists PCMA first (the peer's order, among the codecs the bridge
lists), the phone takes it, the P2P answer names it: both recordings hold
the other side's tone (FFT), the ``ended`` summary names PCMA on both legs,
passthrough, more than 50 frames untouched each way, none transcoded.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pnode.gateways.sip.bridge import BridgeMode
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia
from p2pnode.sessions.media import ToneSource
from tests.harness.baresip import finished_recording
from tests.harness.tools import require_tool
from tests.integration.bridge.baresip_rig import (
    WAIT,
    Heard,
    bridge_rig,
    ended,
    phone_config,
    registered,
    spawn,
    stop,
)
from tests.integration.bridge.test_bridge_baresip import assert_tone
from tests.integration.bridge.test_bridge_call_loopback import ALICE_ID, loopback_ice
from tests.integration.bridge.test_bridge_codec_preference import BRIDGE_CODECS

pytestmark = [pytest.mark.interop, pytest.mark.slow]
TALK = 2.0  # seconds of audio once it flows


async def scenario(baresip: str, tmp: Path) -> Heard:
    config = CallConfig(audio_codecs=BRIDGE_CODECS)  # PCMU first, as the runtime lists
    answering = CallConfig(auto_answer=True)

    def answer_media() -> CallMedia:
        return CallMedia(ToneSource(550.0), tmp / "unused.wav")

    async with bridge_rig(tmp, config, answering, answer_media) as rig:
        record = phone_config(tmp / "phone", rig.alice_password, rig.address, "PCMU,PCMA")
        phone = await spawn(baresip, "-f", str(tmp / "phone"), "-t", "60")
        try:
            await registered(rig.gateway, 1)
            rig.peer.config = replace(answering, audio_codecs=("PCMA", "opus"))
            call_id = await rig.peer.dial(ALICE_ID, CallMedia(ToneSource(660.0), tmp / "peer.wav"))
            async with asyncio.timeout(WAIT):
                await rig.peer.wait_state(call_id, {CallState.ANSWERED})
                await rig.peer.wait_first_frame(call_id)
            await asyncio.sleep(TALK)
            await rig.peer.hangup(call_id)
            summary = await ended(rig.bridge)
            await asyncio.sleep(0.5)  # baresip closes its recording after the BYE
        finally:
            await stop(phone)
    return Heard(finished_recording(record), tmp / "peer.wav", summary)


@pytest.fixture(scope="module")
def heard() -> Iterator[Heard]:
    baresip = require_tool("baresip")
    with tempfile.TemporaryDirectory() as tmp, loopback_ice():
        yield asyncio.run(scenario(baresip, Path(tmp)))


def test_peer_offering_pcma_first_rings_the_phone_with_pcma_first(heard: Heard) -> None:
    assert_tone(heard.peer_wav, 440.0)  # the peer heard baresip's own PCMA packets
    assert_tone(heard.phone_wav, 660.0)  # baresip heard aiortc's PCMA packets
    summary = heard.summary
    assert (summary.phone_codec, summary.webrtc_codec) == ("PCMA", "PCMA")
    assert summary.mode is BridgeMode.PASSTHROUGH
    assert summary.transcoded_frames == 0 and summary.passthrough_frames > 50
    assert summary.direct_frames > 50  # phone -> peer by DirectRtp
    assert summary.peer_passthrough_frames > 50  # peer -> phone taken at the receiver

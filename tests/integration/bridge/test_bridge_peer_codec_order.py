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

The same call is read as the control API and ``p2pnode sip bridge`` show it
(``bridge_answer`` over the bridge's real live legs and ended call, then
``bridge_lines``): the live leg carries the P2P call's id (it had none), the
ended call its ``direct_frames`` and ``peer_passthrough_frames`` (not in the
API before), and the CLI prints the call id.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from p2pnode.app.api_sip_bridge import SipBridgeAnswer, bridge_answer
from p2pnode.app.sip_bridge import BridgedCall
from p2pnode.app.sip_bridge_stats import LiveCall, SipBridgeStatistics, live_calls
from p2pnode.cli.sip import bridge_lines
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


@dataclass(frozen=True)
class Seen:
    """The call as heard, and as the API answered during and after it."""

    heard: Heard
    call_id: bytes  # the peer's P2P call id (the bridge's call has the same)
    live: tuple[LiveCall, ...]
    answer: SipBridgeAnswer


async def scenario(baresip: str, tmp: Path) -> Seen:
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
            live = live_calls("alice", rig.bridge_ua, rig.bridge.call_legs())
            await rig.peer.hangup(call_id)
            summary = await ended(rig.bridge)
            await asyncio.sleep(0.5)  # baresip closes its recording after the BYE
        finally:
            await stop(phone)
    stats = SipBridgeStatistics(
        account="bob",
        active_calls=len(live),
        calls=(),
        refusals=(),
        packets_from_phone=0,
        packets_to_phone=0,
        lost=0,
        passthrough_frames=0,
        transcoded_frames=0,
        digits_from_phone=0,
        digits_to_phone=0,
        digits_dropped=0,
        bridges=(),
        recent=(BridgedCall("alice", call_id, summary),),
        live=live,
    )
    heard = Heard(finished_recording(record), tmp / "peer.wav", summary)
    return Seen(heard, call_id, live, bridge_answer(stats))


@pytest.fixture(scope="module")
def seen() -> Iterator[Seen]:
    baresip = require_tool("baresip")
    with tempfile.TemporaryDirectory() as tmp, loopback_ice():
        yield asyncio.run(scenario(baresip, Path(tmp)))


def test_peer_offering_pcma_first_rings_the_phone_with_pcma_first(seen: Seen) -> None:
    heard = seen.heard
    assert_tone(heard.peer_wav, 440.0)  # the peer heard baresip's own PCMA packets
    assert_tone(heard.phone_wav, 660.0)  # baresip heard aiortc's PCMA packets
    summary = heard.summary
    assert (summary.phone_codec, summary.webrtc_codec) == ("PCMA", "PCMA")
    assert summary.mode is BridgeMode.PASSTHROUGH
    assert summary.transcoded_frames == 0 and summary.passthrough_frames > 50
    assert summary.direct_frames > 50  # phone -> peer by DirectRtp
    assert summary.peer_passthrough_frames > 50  # peer -> phone taken at the receiver


def test_the_api_names_live_calls_and_shows_direct_frames(seen: Seen) -> None:
    (active,) = seen.answer.active  # the one phone leg in progress, named by its P2P call
    assert active.call_id == seen.call_id.hex()
    assert active.phone_codec == "PCMA"
    (recent,) = seen.answer.recent
    assert recent.call_id == seen.call_id.hex()
    assert recent.direct_frames == seen.heard.summary.direct_frames > 50
    assert recent.peer_passthrough_frames == seen.heard.summary.peer_passthrough_frames > 50
    again = SipBridgeAnswer.model_validate_json(seen.answer.model_dump_json())
    assert again == seen.answer  # what the CLI reads back from the route


def test_the_cli_prints_the_call_id(seen: Seen) -> None:
    lines = bridge_lines(seen.answer)
    call = seen.call_id.hex()
    active = [line for line in lines if line.lstrip().startswith("active")]
    assert len(active) == 1 and call in active[0]
    ended = [line for line in lines if line.lstrip().startswith(call)]
    assert len(ended) == 1 and "PCMA/PCMA passthrough" in ended[0]
    assert f"({seen.heard.summary.direct_frames} direct)" in ended[0]

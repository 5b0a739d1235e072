"""The P2P leg takes the phone's codec: baresip's opus, PCMA and G.722 pass through both ways.

One gateway, one bridge and two calls services for the module (baresip_rig.py: loopback, MD5
digest, ``net_interface 127.0.0.1`` as in test_bridge_baresip_codecs.py). The
bridge's calls service lists PCMU first (what ``p2pnode run`` configures),
so without the per-call order every call below was transcoded:

* the peer (660 Hz) dials ``alice`` offering PCMU first, then opus; her
  baresip (440 Hz) speaks opus only. The bridge rings the phone first, so it
  knows the phone's codec before it answers the peer: its answer names opus
  (the peer offered it), and the phone's frames go out by the direct sender
  (``DirectRtp``, not aiortc's sender task) although the bridge answered;
* alice's baresip offering PCMA only dials ``bob`` (the peer, auto-answering
  at 550 Hz): the bridge's P2P offer lists PCMA first, the peer answers PCMA;
* the same with G.722 only: aiortc 1.16 speaks G.722, the peer answers it;
* alice's baresip offering G.722 then PCMA dials ``bob`` while the bridge's
  list lacks G.722 (``PCMU, PCMA, opus``): the P2P offer lists PCMA first
  (the phone's codecs the bridge lists, in the phone's order), the peer
  answers PCMA, and the phone is answered PCMA, not its first choice.

Each recording must hold the other side's tone (FFT); the bridge's ``ended``
summary must name the same codec on both legs, passthrough, and more than 50
frames each way carried untouched (the phone's by ``DirectRtp``, the peer's
taken at aiortc's receiver), none transcoded.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pnode.gateways.sip.bridge import (
    BridgedCallSummary,
    BridgeMode,
    SipP2pBridge,
)
from p2pnode.gateways.sip.gateway import SipGateway
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.harness.baresip import finished_recording
from tests.harness.tools import require_tool
from tests.integration.bridge.baresip_rig import (
    DOMAIN,
    WAIT,
    Heard,
    bridge_rig,
    ended,
    next_event,
    phone_config,
    registered,
    spawn,
    stop,
)
from tests.integration.bridge.test_bridge_baresip import assert_tone
from tests.integration.bridge.test_bridge_call_loopback import ALICE_ID, loopback_ice

pytestmark = [pytest.mark.interop, pytest.mark.slow]
TALK = 2.0  # seconds of audio per call once it flows
# The bridge's P2P codecs as the runtime lists them (app/sip_bridge.py): PCMU first.
BRIDGE_CODECS = ("PCMU", "PCMA", "opus", "G722")


async def _peer_calls_opus_phone(
    peer: CallService, bridge: SipP2pBridge, baresip: str, tmp: Path, gateway: SipGateway
) -> tuple[BridgedCallSummary, asyncio.subprocess.Process]:
    phone = await spawn(baresip, "-f", str(tmp / "opus"), "-t", "60")
    await registered(gateway, 1)
    media = CallMedia(ToneSource(660.0), tmp / "peer-opus.wav")
    call_id = await peer.dial(ALICE_ID, media)
    async with asyncio.timeout(WAIT):
        await peer.wait_state(call_id, {CallState.ANSWERED})
        await peer.wait_first_frame(call_id)
    await asyncio.sleep(TALK)
    await peer.hangup(call_id)
    return await ended(bridge), phone


async def _phone_dials_bob(
    peer: CallService, bridge: SipP2pBridge, baresip: str, directory: Path
) -> tuple[BridgedCallSummary, asyncio.subprocess.Process]:
    dial = ("-e", f"/dial sip:bob@{DOMAIN}")
    phone = await spawn(baresip, "-f", str(directory), "-t", "60", *dial)
    answered = await next_event(bridge, "peer-answered")  # its call id is the P2P call's
    async with asyncio.timeout(WAIT):
        await peer.wait_first_frame(answered.call_id)
    await asyncio.sleep(TALK)
    await peer.hangup(answered.call_id)
    return await ended(bridge), phone


async def scenario(baresip: str, tmp: Path) -> dict[str, Heard]:
    config = CallConfig(audio_codecs=BRIDGE_CODECS)
    answering = CallConfig(auto_answer=True)  # opus, PCMU, PCMA: what a peer lists
    summaries: dict[str, BridgedCallSummary] = {}

    def answer_media() -> CallMedia:
        return CallMedia(ToneSource(550.0), tmp / f"peer-{len(summaries)}.wav")

    phones: list[asyncio.subprocess.Process] = []
    async with bridge_rig(tmp, config, answering, answer_media) as rig:
        peer, bridge, hosted = rig.peer, rig.bridge, rig.hosted
        records = {
            codec: phone_config(tmp / codec, rig.alice_password, rig.address, spelled)
            for codec, spelled in (
                ("opus", "opus/48000/2"),
                ("PCMA", "PCMA"),
                ("G722", "G722/16000/1"),
                ("G722,PCMA", "G722/16000/1,PCMA"),
            )
        }
        try:
            # 1. The peer offers PCMU first, then opus; alice's baresip speaks opus only.
            peer.config = replace(answering, audio_codecs=("PCMU", "opus"))
            summaries["opus"], phone = await _peer_calls_opus_phone(
                peer, bridge, baresip, tmp, rig.gateway
            )
            phones.append(phone)
            peer.config = answering
            # 2-3. alice's baresip offering only PCMA, then only G.722, dials bob.
            for codec in ("PCMA", "G722", "G722,PCMA"):
                if codec == "G722,PCMA":  # 4. the bridge no longer lists G.722
                    hosted.config = replace(config, audio_codecs=("PCMU", "PCMA", "opus"))
                await asyncio.sleep(0.5)  # baresip closes its recording after the BYE
                await stop(phones[-1])
                summaries[codec], phone = await _phone_dials_bob(peer, bridge, baresip, tmp / codec)
                phones.append(phone)
            await asyncio.sleep(0.5)
            await stop(phones[-1])
        finally:
            for phone in phones:
                await stop(phone)
    # the peer's answer_media names each answered call's recording by the calls before it
    peer_wavs = {"opus": tmp / "peer-opus.wav", "PCMA": tmp / "peer-1.wav"}
    peer_wavs["G722"] = tmp / "peer-2.wav"
    peer_wavs["G722,PCMA"] = tmp / "peer-3.wav"
    return {
        codec: Heard(finished_recording(records[codec]), peer_wavs[codec], summaries[codec])
        for codec in summaries
    }


@pytest.fixture(scope="module")
def calls() -> Iterator[dict[str, Heard]]:
    baresip = require_tool("baresip")
    with tempfile.TemporaryDirectory() as tmp, loopback_ice():
        yield asyncio.run(scenario(baresip, Path(tmp)))


def _passes_through_both_ways(heard: Heard, codec: str) -> None:
    summary = heard.summary
    assert (summary.phone_codec, summary.webrtc_codec) == (codec, codec)
    assert summary.mode is BridgeMode.PASSTHROUGH
    assert summary.transcoded_frames == 0 and summary.passthrough_frames > 50
    assert summary.direct_frames > 50  # phone -> peer by DirectRtp, not aiortc's sender task
    assert summary.peer_passthrough_frames > 50  # peer -> phone taken at the receiver
    assert summary.packets_from_phone > 50 and summary.packets_to_phone > 50


def test_peer_offering_pcmu_first_gets_the_opus_phone_s_codec_both_ways(
    calls: dict[str, Heard],
) -> None:
    heard = calls["opus"]
    assert_tone(heard.peer_wav, 440.0)  # the peer heard baresip's own opus packets
    assert_tone(heard.phone_wav, 660.0)  # baresip heard aiortc's opus packets
    _passes_through_both_ways(heard, "opus")


@pytest.mark.parametrize(
    ("offered", "kept"), [("PCMA", "PCMA"), ("G722", "G722"), ("G722,PCMA", "PCMA")]
)
def test_phone_dialling_a_peer_keeps_its_codec_on_the_p2p_leg(
    calls: dict[str, Heard], offered: str, kept: str
) -> None:
    heard = calls[offered]
    assert_tone(heard.peer_wav, 440.0)
    assert_tone(heard.phone_wav, 550.0)
    _passes_through_both_ways(heard, kept)

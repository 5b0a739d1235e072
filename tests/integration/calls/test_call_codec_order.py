"""A call's own codec order (``CallMedia.audio_codecs``), dialling and answering, on loopback.

Both services keep warm connections, so the per-call order must also hold
when a pre-gathered connection exists: the dial skips the warm offer (it
lists the service's codecs) and leaves it for the next call; the answer sets
its preferences on the warm answer connection's idle transceiver.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.integration.calls.callpair import BOB, call_pair
from tests.integration.calls.test_calls_loopback import assert_tone, run_async

pytestmark = pytest.mark.slow
WAIT = 15.0


async def _warm(alice: CallService, bob: CallService) -> None:
    async with asyncio.timeout(WAIT):
        while not (alice.warm_ready("offer") and bob.warm_ready("answer")):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _call(alice: CallService, media: CallMedia) -> str | None:
    """One short call; the codec alice's side negotiated."""
    call_id = await alice.dial(BOB, media)
    async with asyncio.timeout(WAIT):
        await alice.wait_first_frame(call_id)
    await asyncio.sleep(1.2)
    codec = alice.statistics(call_id).codec
    await alice.hangup(call_id)
    return codec


@run_async
async def test_each_call_s_codecs_win_dialling_and_answering(tmp_path: Path) -> None:
    answers = iter([("PCMA",), ("G722",)])
    heard: list[str | None] = []

    def bob_media() -> CallMedia:
        wav = tmp_path / f"bob-{len(heard)}.wav"
        return CallMedia(ToneSource(660.0), wav, audio_codecs=next(answers))

    alice_config = CallConfig(warm=True)  # opus, PCMU, PCMA
    bob_config = CallConfig(auto_answer=True, warm=True)
    async with call_pair(alice_config, bob_config, bob_media=bob_media) as pair:
        await _warm(pair.alice, pair.bob)
        # 1. alice's offer lists opus first; bob's call wants PCMA: the answer names PCMA
        # alone, so alice (whose own first choice is opus) sends PCMA too.
        media = CallMedia(ToneSource(440.0), tmp_path / "alice-0.wav")
        heard.append(await _call(pair.alice, media))  # bob answered on his warm connection
        # 2. alice's call wants PCMU then PCMA (her warm offer, opus first, stays unused);
        # bob's call wants G.722, which the offer lacks: the offer's own first wins.
        await _warm(pair.alice, pair.bob)
        wav = tmp_path / "alice-1.wav"
        media = CallMedia(ToneSource(440.0), wav, audio_codecs=("PCMU", "PCMA"))
        heard.append(await _call(pair.alice, media))
        assert pair.alice.warm_ready("offer")  # not taken by a call with its own codecs
    assert heard == ["audio/PCMA", "audio/PCMU"]
    for index in range(2):
        assert_tone(tmp_path / f"alice-{index}.wav", 660.0)
        assert_tone(tmp_path / f"bob-{index}.wav", 440.0)

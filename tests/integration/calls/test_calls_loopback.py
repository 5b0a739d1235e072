"""Calls between two in-process peers on loopback: real aiortc, real sockets, FFT of recordings.

Alice sends 440 Hz, Bob 660 Hz; each side's recording must hold the other
side's tone and nothing else dominant. Call-control outcomes (cancel, decline,
no answer, policy, busy, glare) run without media past the offer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec

import pytest

from p2pnode.sessions.call import CallState, CallTimers
from p2pnode.sessions.calls import CallConfig, CallMedia, NonContactPolicy
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav, spectrum
from tests.integration.calls.callpair import ALICE, BOB, call_pair, loopback_ice

P = ParamSpec("P")
WAIT = 15.0
ENDED = {
    CallState.DECLINED,
    CallState.BUSY,
    CallState.NO_ANSWER,
    CallState.CANCELLED,
    CallState.HUNG_UP,
    CallState.REFUSED,
    CallState.SUPERSEDED,
    CallState.FAILED,
}


def run_async(function: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        with loopback_ice():
            asyncio.run(function(*args, **kwargs))

    return wrapper


def assert_tone(path: Path, expected_hz: float, *, skip_s: float = 0.3) -> None:
    samples, rate = read_wav(path)
    assert samples.size > rate, f"recording too short: {samples.size / rate:.2f} s"
    found = spectrum(samples[int(skip_s * rate) :], rate)
    assert abs(found.dominant_hz - expected_hz) < 5, found
    assert found.dominance > 20, found  # nothing else comes close
    assert found.rms > 0.02, found


async def talk(
    codecs: tuple[str, ...], tmp_path: Path, seconds: float, *, video: bool = False
) -> tuple[str | None, str | None, int, int]:
    config = CallConfig(audio_codecs=codecs, auto_answer=False)
    bob_config = CallConfig(auto_answer=True)
    bob_media = functools.partial(CallMedia, ToneSource(660.0), tmp_path / "bob.wav", video)
    async with call_pair(config, bob_config, bob_media=bob_media) as pair:
        call_id = await pair.alice.dial(
            BOB, CallMedia(ToneSource(440.0), tmp_path / "alice.wav", video)
        )
        async with asyncio.timeout(WAIT):
            await pair.alice.wait_state(call_id, {CallState.ANSWERED})
            await pair.alice.wait_first_frame(call_id)
        await asyncio.sleep(seconds)
        stats = pair.alice.statistics(call_id)
        bob_stats = pair.bob.statistics(call_id)
        await pair.alice.hangup(call_id)
        async with asyncio.timeout(WAIT):
            update = await pair.bob.wait_state(call_id, ENDED)
        assert update.state is CallState.HUNG_UP
        assert stats.frames > 25 * seconds  # 50 frames/s of 20 ms
        return stats.codec, bob_stats.codec, stats.video_frames, bob_stats.video_frames


@pytest.mark.slow
@run_async
async def test_opus_call_each_side_hears_the_other_tone(tmp_path: Path) -> None:
    codec, bob_codec, _, _ = await talk(("opus",), tmp_path, 2.5)
    assert codec == bob_codec == "audio/opus"
    assert_tone(tmp_path / "alice.wav", 660.0)
    assert_tone(tmp_path / "bob.wav", 440.0)


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_calls_carry_both_tones(codec: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        used, bob_used, _, _ = await talk((codec,), tmp_path, 1.5)
        assert used == bob_used == f"audio/{codec}"
        assert_tone(tmp_path / "alice.wav", 660.0)
        assert_tone(tmp_path / "bob.wav", 440.0)

    run_async(scenario)()


@pytest.mark.slow
@run_async
async def test_vp8_test_pattern_arrives_both_ways(tmp_path: Path) -> None:
    _, _, alice_video, bob_video = await talk(("opus",), tmp_path, 2.0, video=True)
    assert alice_video > 5
    assert bob_video > 5
    assert_tone(tmp_path / "alice.wav", 660.0)


# ------------------------------------------------------------------ call control


@run_async
async def test_caller_hangs_up_while_it_rings_callee_sees_cancelled() -> None:
    async with call_pair(CallConfig(), CallConfig()) as pair:
        call_id = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            await pair.bob.wait_state(call_id, {CallState.RINGING_LOCAL})
            await pair.alice.wait_state(call_id, {CallState.RINGING_REMOTE})
            await pair.alice.hangup(call_id)
            update = await pair.bob.wait_state(call_id, ENDED)
        assert update.state is CallState.CANCELLED
        assert pair.alice.state(call_id) is CallState.CANCELLED


@run_async
async def test_callee_declines_caller_sees_declined() -> None:
    async with call_pair(CallConfig(), CallConfig()) as pair:
        call_id = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            await pair.bob.wait_state(call_id, {CallState.RINGING_LOCAL})
            await pair.bob.decline(call_id)
            update = await pair.alice.wait_state(call_id, ENDED)
        assert update.state is CallState.DECLINED


@run_async
async def test_nobody_answers_no_answer_after_the_configured_time() -> None:
    loop = asyncio.get_running_loop()
    timers = CallTimers(no_answer_after=0.6, ring_for=30.0)
    async with call_pair(CallConfig(timers=timers), CallConfig()) as pair:
        call_id = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            await pair.alice.wait_state(call_id, {CallState.RINGING_REMOTE})
            rang_at = loop.time()
            update = await pair.alice.wait_state(call_id, ENDED)
            ended_at = loop.time()
            bob_update = await pair.bob.wait_state(call_id, ENDED)
        assert update.state is CallState.NO_ANSWER
        assert ended_at - rang_at >= 0.6  # not before the configured time
        assert bob_update.state is CallState.CANCELLED  # the callee stops ringing


@run_async
async def test_unreachable_peer_fails_after_the_configured_time() -> None:
    timers = CallTimers(unreachable_after=0.4)
    async with call_pair(CallConfig(timers=timers), CallConfig()) as pair:
        pair.board.cut = True
        call_id = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            update = await pair.alice.wait_state(call_id, ENDED)
        assert update.state is CallState.FAILED


@pytest.mark.parametrize(
    ("policy", "bob_state", "alice_state"),
    [
        (NonContactPolicy.REFUSE, CallState.REFUSED, CallState.REFUSED),
        (NonContactPolicy.REQUEST, CallState.REQUESTED, CallState.RINGING_REMOTE),
        (NonContactPolicy.RING, CallState.RINGING_LOCAL, CallState.RINGING_REMOTE),
    ],
)
def test_non_contact_policy(
    policy: NonContactPolicy, bob_state: CallState, alice_state: CallState
) -> None:
    async def scenario() -> None:
        bob_config = CallConfig(non_contacts=policy)
        async with call_pair(
            CallConfig(), bob_config, bob_contacts=lambda peer: peer != ALICE
        ) as pair:
            call_id = await pair.alice.dial(BOB)
            async with asyncio.timeout(WAIT):
                await pair.bob.wait_state(call_id, {bob_state})
                await pair.alice.wait_state(call_id, {alice_state})

    run_async(scenario)()


@run_async
async def test_a_contact_is_auto_answered_when_configured() -> None:
    async with call_pair(CallConfig(), CallConfig(auto_answer=True)) as pair:
        call_id = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            await pair.alice.wait_state(call_id, {CallState.ANSWERED})
        assert pair.bob.state(call_id) is CallState.ANSWERED


@run_async
async def test_a_full_callee_answers_busy() -> None:
    async with call_pair(CallConfig(), CallConfig(max_calls=1)) as pair:
        first = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            await pair.bob.wait_state(first, {CallState.RINGING_LOCAL})
        second = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            update = await pair.alice.wait_state(second, ENDED)
        assert update.state is CallState.BUSY


@run_async
async def test_glare_leaves_exactly_one_call_answered() -> None:
    async with call_pair(CallConfig(), CallConfig()) as pair:
        alice_call, bob_call = await asyncio.gather(pair.alice.dial(BOB), pair.bob.dial(ALICE))
        winner = alice_call if ALICE < BOB else bob_call
        loser = bob_call if winner == alice_call else alice_call
        async with asyncio.timeout(WAIT):
            await pair.alice.wait_state(winner, {CallState.ANSWERED})
            if pair.bob.state(winner) is not CallState.ANSWERED:
                await pair.bob.wait_state(winner, {CallState.ANSWERED})
        assert pair.alice.state(loser) is CallState.SUPERSEDED
        assert pair.bob.state(loser) is CallState.SUPERSEDED


@run_async
async def test_garbage_and_stray_signals_are_dropped_and_counted() -> None:
    async with call_pair(CallConfig(), CallConfig()) as pair:
        await pair.bob.handle_signal(ALICE, b"\xff\x00garbage")
        call_id = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            await pair.bob.wait_state(call_id, {CallState.RINGING_LOCAL})
        # a third party cannot act on someone else's call
        cancel = next(p for s, _, p in pair.board.sent if s == ALICE)
        await pair.bob.handle_signal("mallory", cancel)
        assert pair.bob.state(call_id) is CallState.RINGING_LOCAL
        assert sum(pair.bob.drops.counts.values()) == 2

"""Relayed calls through our own TURN server on loopback, and relay failover mid-call.

Both peers use relay-only ICE, so every packet crosses one of our relays. In
the failover test the relay carrying the call is closed mid-call; the caller
notices the silence within about a second and re-offers through the second
relay. The gap is measured from the recordings, not from the service's view.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, IceServer, MediaPath
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import longest_gap, read_wav, spectrum
from tests.integration.calls.callpair import BOB, call_pair, turn_relay
from tests.integration.calls.test_calls_loopback import WAIT, assert_tone, run_async

USERS = {"alice": "alice-secret", "bob": "bob-secret"}


def relay_path(port: int, user: str, name: str) -> MediaPath:
    server = IceServer(f"turn:127.0.0.1:{port}?transport=udp", user, USERS[user])
    return MediaPath((server,), relay_only=True, name=name)


@pytest.mark.slow
@run_async
async def test_relayed_call_through_our_turn_carries_both_tones(tmp_path: Path) -> None:
    async with turn_relay(USERS) as (_relay, port):
        alice_config = CallConfig(paths=(relay_path(port, "alice", "relay-a"),))
        bob_config = CallConfig(paths=(relay_path(port, "bob", "relay-a"),), auto_answer=True)
        bob_media = functools.partial(CallMedia, ToneSource(660.0), tmp_path / "bob.wav")
        async with call_pair(alice_config, bob_config, bob_media=bob_media) as pair:
            call_id = await pair.alice.dial(
                BOB, CallMedia(ToneSource(440.0), tmp_path / "alice.wav")
            )
            async with asyncio.timeout(WAIT):
                update = await pair.alice.wait_state(call_id, {CallState.ANSWERED})
                await pair.alice.wait_first_frame(call_id)
            await asyncio.sleep(1.5)
            assert update.path is not None
            await pair.alice.hangup(call_id)
    assert_tone(tmp_path / "alice.wav", 660.0)
    assert_tone(tmp_path / "bob.wav", 440.0)


@pytest.mark.slow
@run_async
async def test_relay_killed_mid_call_audio_back_within_three_seconds(tmp_path: Path) -> None:
    async with turn_relay(USERS) as (relay_a, port_a), turn_relay(USERS) as (_relay_b, port_b):
        alice_config = CallConfig(
            paths=(
                relay_path(port_a, "alice", "relay-a"),
                relay_path(port_b, "alice", "relay-b"),
            )
        )
        bob_config = CallConfig(
            paths=(relay_path(port_a, "bob", "relay-a"), relay_path(port_b, "bob", "relay-b")),
            auto_answer=True,
        )
        bob_media = functools.partial(CallMedia, ToneSource(660.0), tmp_path / "bob.wav")
        async with call_pair(alice_config, bob_config, bob_media=bob_media) as pair:
            call_id = await pair.alice.dial(
                BOB, CallMedia(ToneSource(440.0), tmp_path / "alice.wav")
            )
            async with asyncio.timeout(WAIT):
                await pair.alice.wait_state(call_id, {CallState.ANSWERED})
                await pair.alice.wait_first_frame(call_id)
            await asyncio.sleep(1.5)
            relay_a.close()  # the relay carrying the call dies
            await asyncio.sleep(4.5)
            stats = pair.alice.statistics(call_id)
            assert stats.failovers >= 1  # one under normal load; a loaded CI box may retry
            assert stats.generation % 2 == 1  # it ends on the second relay
            await pair.alice.hangup(call_id)
    for name, tone in (("alice", 660.0), ("bob", 440.0)):
        samples, rate = read_wav(tmp_path / f"{name}.wav")
        seconds = samples.size / rate
        assert seconds > 5.0, f"{name}: recording {seconds:.1f} s"
        gap = longest_gap(samples, rate, skip_start_s=0.3, skip_end_s=0.1)
        assert 0.5 < gap < 3.0, f"{name}: gap {gap:.2f} s"  # there was a gap, and it was short
        after = samples[-int(1.0 * rate) :]  # the last second is on the second relay
        found = spectrum(after, rate)
        assert abs(found.dominant_hz - tone) < 5, found
        assert found.dominance > 20, found


@pytest.mark.slow
@run_async
async def test_warm_connections_carry_a_relayed_call_and_are_replaced(tmp_path: Path) -> None:
    """Both sides gathered ahead of the call (TURN allocations ready); tones still cross."""
    async with turn_relay(USERS) as (_relay, port):
        alice_config = CallConfig(paths=(relay_path(port, "alice", "relay-a"),), warm=True)
        bob_config = CallConfig(
            paths=(relay_path(port, "bob", "relay-a"),), auto_answer=True, warm=True
        )
        bob_media = functools.partial(CallMedia, ToneSource(660.0), tmp_path / "bob.wav")
        async with call_pair(alice_config, bob_config, bob_media=bob_media) as pair:
            async with asyncio.timeout(WAIT):
                while not (pair.alice.warm_ready("offer") and pair.bob.warm_ready("answer")):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            call_id = await pair.alice.dial(
                BOB, CallMedia(ToneSource(440.0), tmp_path / "alice.wav")
            )
            assert not pair.alice.warm_ready("offer")  # taken by this call
            async with asyncio.timeout(WAIT):
                await pair.alice.wait_first_frame(call_id)
            await asyncio.sleep(1.5)
            await pair.alice.hangup(call_id)
            async with asyncio.timeout(WAIT):
                while not pair.alice.warm_ready("offer"):  # noqa: ASYNC110 (a flag, no event)
                    await asyncio.sleep(0.05)
    assert_tone(tmp_path / "alice.wav", 660.0)
    assert_tone(tmp_path / "bob.wav", 440.0)

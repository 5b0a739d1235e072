"""DTMF and CALLER signals between two real calls services: order, repeats, states, senders."""

from __future__ import annotations

import asyncio

import pytest

from p2pnode.sessions.call import CallState
from p2pnode.sessions.call_signal import (
    CallSignal,
    Dtmf,
    RelayedCaller,
    SignalKind,
    encode_signal,
)
from p2pnode.sessions.calls import CallConfig
from tests.integration.calls.callpair import ALICE, BOB, call_pair, loopback_ice

WAIT = 15.0


def dtmf(call_id: bytes, sequence: int, digit: str) -> bytes:
    return encode_signal(CallSignal(SignalKind.DTMF, call_id, dtmf=Dtmf(sequence, digit, 100)))


def caller(call_id: bytes, uri: str) -> bytes:
    signal = CallSignal(SignalKind.CALLER, call_id, caller=RelayedCaller(uri, False))
    return encode_signal(signal)


async def scenario() -> None:
    config = CallConfig(audio_codecs=("PCMU",))
    async with call_pair(config, config) as pair:
        call_id = await pair.alice.dial(BOB)
        async with asyncio.timeout(WAIT):
            await pair.bob.wait_state(call_id, {CallState.RINGING_LOCAL})
        with pytest.raises(ValueError, match="answered"):
            await pair.alice.send_dtmf(call_id, "1")  # not answered yet
        await pair.bob.handle_signal(ALICE, dtmf(call_id, 0, "1"))  # dropped: still ringing
        await pair.bob.handle_signal(ALICE, caller(call_id, "sip:carrier@other.example"))
        await pair.bob.handle_signal(ALICE, caller(call_id, "sip:second@other.example"))
        await pair.alice.handle_signal(BOB, caller(call_id, "sip:x@y"))  # not the callee's to say
        await pair.bob.handle_signal("mallory", dtmf(call_id, 5, "6"))  # not this call's peer
        await pair.bob.answer(call_id)
        async with asyncio.timeout(WAIT):
            await pair.alice.wait_state(call_id, {CallState.ANSWERED})
        for digit in "123":
            await pair.alice.send_dtmf(call_id, digit)
        digits: list[str] = []
        relayed: list[tuple[str | None, str]] = []

        async def collect(count: int) -> None:
            async with asyncio.timeout(WAIT):
                while len(digits) < count:
                    update = await pair.bob.wait_update()
                    relayed.append((update.relayed_caller, update.detail))
                    if update.dtmf is not None:
                        assert update.call_id == call_id and update.state is CallState.ANSWERED
                        digits.append(update.dtmf)

        await collect(3)  # the signalling path delivered them; now the awkward ones
        await pair.bob.handle_signal(ALICE, dtmf(call_id, 1, "2"))  # a repeat of "2"
        await pair.bob.handle_signal(ALICE, dtmf(call_id, 10, "#"))  # 3..9 lost: go on
        await pair.bob.handle_signal(ALICE, dtmf(call_id, 9, "8"))  # late: dropped
        await collect(4)
        await pair.alice.hangup(call_id)
        bob_drops = dict(pair.bob.drops.counts)
        alice_drops = dict(pair.alice.drops.counts)
    assert digits == ["1", "2", "3", "#"]
    assert ("sip:carrier@other.example", "unverified") in relayed
    assert {uri for uri, _ in relayed} == {"sip:carrier@other.example"}  # on every update
    assert bob_drops["dtmf outside an answered call"] == 1
    assert bob_drops["unexpected caller"] == 1
    assert bob_drops["stale dtmf"] == 2
    assert bob_drops["unknown call"] == 1
    assert alice_drops["unexpected caller"] == 1


@pytest.mark.slow
def test_dtmf_and_caller_signals_reach_the_callee_once_in_order() -> None:
    with loopback_ice():
        asyncio.run(scenario())

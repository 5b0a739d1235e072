"""Renegotiation of ``CallMedia(sdp=...)`` calls, signalling only (no connection anywhere).

Both peers' calls have an ``SdpSource`` that returns labelled strings, so the
services carry SDPs they never parse into connections: this pins what the
node does with them. Each re-offer of a peer is held until the endpoint
answers it; a newer one replaces a held one; stale generations are refused
(``StaleRenegotiationError``) or dropped and counted ("stale reoffer"); the
endpoint's answer goes as the REANSWER and reaches the peer's ``accept``.
"""

from __future__ import annotations

import asyncio

import pytest

from p2pnode.sessions.call import CallState
from p2pnode.sessions.call_sdp import REOFFER_HELD
from p2pnode.sessions.call_signal import CallSignal, SignalKind, encode_signal
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService, StaleRenegotiationError
from tests.integration.calls.callpair import ALICE, BOB, call_pair

WAIT = 10.0


class Labels:
    """An ``SdpSource`` whose SDPs are ``name``-labelled strings, counted per kind."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.made: list[str] = []
        self.answered: list[str] = []  # the remote offers it answered
        self.accepted: list[str] = []  # the remote answers it was given

    def _make(self, kind: str) -> str:
        sdp = f"{self.name} {kind} {len(self.made)}"
        self.made.append(sdp)
        return sdp

    async def offer(self) -> str:
        return self._make("offer")

    async def reoffer(self) -> str:
        return self._make("reoffer")

    async def answer(self, remote: str) -> str:
        self.answered.append(remote)
        return self._make("answer")

    async def accept(self, remote: str) -> None:
        self.accepted.append(remote)


async def held_update(service: CallService) -> None:
    async with asyncio.timeout(WAIT):
        while (await service.wait_update()).detail != REOFFER_HELD:
            pass


async def until(service: CallService, call_id: bytes, generation: int) -> None:
    async with asyncio.timeout(WAIT):
        while service.statistics(call_id).generation != generation:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def test_held_reoffers_newest_wins_stale_refused_answer_reaches_the_peer() -> None:
    asyncio.run(_scenario())


async def _scenario() -> None:
    a, b = Labels("alice"), Labels("bob")
    async with call_pair(
        CallConfig(), CallConfig(auto_answer=True), bob_media=lambda: CallMedia(sdp=b)
    ) as pair:
        alice, bob = pair.alice, pair.bob
        call_id = await alice.dial(BOB, CallMedia(sdp=a))
        async with asyncio.timeout(WAIT):
            await alice.wait_state(call_id, {CallState.ANSWERED})
        assert b.answered == ["alice offer 0"]
        assert a.accepted == ["bob answer 0"]
        assert alice.remote_sdp(call_id) == "bob answer 0"
        assert alice.path(call_id) is None and alice.statistics(call_id).frames == 0

        # bob re-offers twice before alice's endpoint answers: only the newest waits
        assert await bob.reoffer(call_id) == 1
        await held_update(alice)
        assert await bob.reoffer(call_id) == 2
        await held_update(alice)
        held = alice.waiting_reoffer(call_id)
        assert held is not None and (held.generation, held.sdp) == (2, "bob reoffer 2")
        assert a.answered == []  # nothing answered without the endpoint
        with pytest.raises(StaleRenegotiationError):
            await alice.answer_reoffer(call_id, 1)
        stale = CallSignal(SignalKind.REOFFER, call_id, 1, "bob reoffer 1")
        await alice.handle_signal(BOB, encode_signal(stale))
        assert alice.drops.counts.get("stale reoffer") == 1
        await alice.handle_signal(ALICE, encode_signal(stale))  # not the call's peer
        assert alice.drops.counts.get("unknown call") == 1
        assert alice.waiting_reoffer(call_id) == held

        await alice.answer_reoffer(call_id, 2)
        assert a.answered == ["bob reoffer 2"]
        await until(bob, call_id, 2)
        assert b.accepted[-1] == "alice answer 1"
        assert alice.statistics(call_id).generation == 2
        assert alice.waiting_reoffer(call_id) is None

        # alice's endpoint re-offers itself: bob is an SdpSource call too, so held there
        assert await alice.reoffer(call_id) == 3
        await held_update(bob)
        await bob.answer_reoffer(call_id, 3)
        await until(alice, call_id, 3)
        assert a.accepted[-1] == "bob answer 3"

        await alice.hangup(call_id)
        async with asyncio.timeout(WAIT):
            await bob.wait_state(call_id, {CallState.HUNG_UP})
        with pytest.raises(StaleRenegotiationError):
            await bob.reoffer(call_id)
        assert bob.waiting_reoffer(call_id) is None


def test_ended_calls_are_forgotten_beyond_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's call table does not grow with every call it ever had."""
    monkeypatch.setattr("p2pnode.sessions.calls.ENDED_CALLS_KEPT", 3)
    asyncio.run(_many_calls())


async def _many_calls() -> None:
    async with call_pair(
        CallConfig(), CallConfig(auto_answer=True), bob_media=lambda: CallMedia(sdp=Labels("b"))
    ) as pair:
        alice, bob = pair.alice, pair.bob
        ids = []
        for _ in range(8):
            call_id = await alice.dial(BOB, CallMedia(sdp=Labels("a")))
            async with asyncio.timeout(WAIT):
                await alice.wait_state(call_id, {CallState.ANSWERED})
            await alice.hangup(call_id)
            async with asyncio.timeout(WAIT):
                await bob.wait_state(call_id, {CallState.HUNG_UP})
            ids.append(call_id)
        ninth = await alice.dial(BOB, CallMedia(sdp=Labels("a")))  # prunes on arrival
        async with asyncio.timeout(WAIT):
            await bob.wait_state(ninth, {CallState.ANSWERED})
        for service in (alice, bob):
            assert [i for i in ids if i in service._sessions] == ids[-3:]  # the newest ended
            assert ninth in service._sessions

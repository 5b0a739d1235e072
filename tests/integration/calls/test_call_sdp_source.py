"""A call whose SDP comes from outside the node, through the public ``CallMedia(sdp=...)``.

No subclass of ``CallService``: alice's service is the plain one, and her call's
media endpoint is a tiny ``SdpSource`` of this test that holds its own aiortc
connections (as the app's page holds its ``RTCPeerConnection``). Bob is an
ordinary node (aiortc, 660 Hz, recording). On loopback, real sockets:

1. alice dials with the source's offer; bob auto-answers; the endpoint hears
   660 Hz and bob hears 440 Hz, while alice's node hears no frame (it holds no
   connection) and reports the codec from bob's answer;
2. bob re-offers (``CallService.reoffer``): alice's node holds it, reports
   ``REOFFER_HELD``, refuses a stale answer, and answers it with the endpoint's
   new connection only when told to (``answer_reoffer``): media flows on it;
3. the endpoint re-offers itself (``CallService.reoffer``, its failover): bob
   re-answers, the endpoint's ``accept`` applies it, media flows on a third
   connection. FFT of each recording: the other side's tone, dominant.

Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from p2pnode.sessions.call import CallState
from p2pnode.sessions.call_sdp import REOFFER_HELD, SdpSource
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService, StaleRenegotiationError
from p2pnode.sessions.media import SourceTrack, ToneSource, WavRecorder
from tests.integration.calls.callpair import BOB, call_pair, loopback_ice
from tests.integration.calls.test_calls_loopback import assert_tone

pytestmark = pytest.mark.slow

WAIT = 20.0  # a bound on every wait, never a speed assertion
FRAMES = 60  # 1.2 s of 20 ms frames heard on a connection before it counts as flowing


class OutsideEndpoint:
    """An ``SdpSource``: one aiortc connection per SDP it makes, recording what it hears."""

    def __init__(self, directory: Path, tasks: asyncio.TaskGroup) -> None:
        self.directory = directory
        self.tasks = tasks
        self.pcs: list[RTCPeerConnection] = []
        self.recorders: list[WavRecorder] = []
        self.accepted: list[str] = []

    def _connection(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only
        pc.addTrack(SourceTrack(ToneSource(440.0)))
        recorder = WavRecorder(self.directory / f"endpoint-{len(self.pcs)}.wav")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.create_task(recorder.consume(track))

        self.pcs.append(pc)
        self.recorders.append(recorder)
        return pc

    async def offer(self) -> str:
        pc = self._connection()
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        return sdp

    async def reoffer(self) -> str:
        return await self.offer()  # every re-offer comes from a new connection

    async def answer(self, remote: str) -> str:
        pc = self._connection()
        await pc.setRemoteDescription(RTCSessionDescription(remote, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        sdp: str = pc.localDescription.sdp
        return sdp

    async def accept(self, remote: str) -> None:
        self.accepted.append(remote)
        await self.pcs[-1].setRemoteDescription(RTCSessionDescription(remote, "answer"))

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()
        for recorder in self.recorders:
            recorder.close()


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait (bounded) until ``condition()`` holds; ``what`` names it when it never does."""
    try:
        async with asyncio.timeout(WAIT):
            while not condition():  # noqa: ASYNC110 - polled counters have no event
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


def test_a_plain_call_service_carries_an_outside_endpoints_sdp(tmp_path: Path) -> None:
    with loopback_ice():
        asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    bob_record = tmp_path / "bob.wav"

    def bob_media() -> CallMedia:
        return CallMedia(source=ToneSource(660.0), record_to=bob_record)

    async with (
        asyncio.TaskGroup() as tasks,
        call_pair(CallConfig(), CallConfig(auto_answer=True), bob_media=bob_media) as pair,
    ):
        alice, bob = pair.alice, pair.bob
        assert type(alice) is CallService  # no subclass: the public option only
        endpoint = OutsideEndpoint(tmp_path, tasks)
        source: SdpSource = endpoint
        try:
            # 1. the endpoint's offer is the dial's; bob's answer reaches accept()
            call_id = await alice.dial(BOB, CallMedia(sdp=source))
            async with asyncio.timeout(WAIT):
                await alice.wait_state(call_id, {CallState.ANSWERED})
            await until(lambda: endpoint.accepted, "bob's answer accepted")
            assert endpoint.accepted[0] == alice.remote_sdp(call_id)
            await until(lambda: endpoint.recorders[0].frames >= FRAMES, "endpoint hears bob")
            await until(lambda: bob.statistics(call_id).frames >= FRAMES, "bob hears endpoint")
            stats = alice.statistics(call_id)
            assert stats.frames == 0  # the node holds no connection and hears nothing
            assert stats.codec == "audio/opus"
            assert alice.path(call_id) is None  # no connection of its own to describe

            # 2. bob re-offers: held for the endpoint until it answers from a new connection
            generation = await bob.reoffer(call_id)
            assert generation == 1
            async with asyncio.timeout(WAIT):
                while (await alice.wait_update()).detail != REOFFER_HELD:
                    pass
            held = alice.waiting_reoffer(call_id)
            assert held is not None and held.generation == 1
            assert len(endpoint.pcs) == 1  # nothing answered it yet
            with pytest.raises(StaleRenegotiationError):
                await alice.answer_reoffer(call_id, 2)
            await alice.answer_reoffer(call_id, 1)
            assert alice.waiting_reoffer(call_id) is None
            with pytest.raises(StaleRenegotiationError):
                await alice.answer_reoffer(call_id, 1)  # answered once only
            await until(lambda: len(endpoint.recorders) == 2, "a second connection")
            await until(lambda: endpoint.recorders[1].frames >= FRAMES, "endpoint hears gen 1")
            await until(lambda: bob.statistics(call_id).generation == 1, "bob on generation 1")
            before = bob.statistics(call_id).frames
            await until(lambda: bob.statistics(call_id).frames >= before + FRAMES, "bob, gen 1")

            # 3. the endpoint's own failover: it re-offers from a third connection
            assert await alice.reoffer(call_id) == 2
            await until(lambda: len(endpoint.accepted) == 2, "bob's re-answer accepted")
            await until(lambda: endpoint.recorders[2].frames >= FRAMES, "endpoint hears gen 2")
            await until(lambda: bob.statistics(call_id).generation == 2, "bob on generation 2")
            before = bob.statistics(call_id).frames
            await until(lambda: bob.statistics(call_id).frames >= before + FRAMES, "bob, gen 2")
            assert alice.statistics(call_id).frames == 0

            await alice.hangup(call_id)
            async with asyncio.timeout(WAIT):
                await bob.wait_state(call_id, {CallState.HUNG_UP})
            with pytest.raises(StaleRenegotiationError):
                await alice.reoffer(call_id)  # not a live call any more
        finally:
            await endpoint.close()  # the recorders' tasks end with their tracks
    assert_tone(bob_record, 440.0)
    for index in range(3):
        assert_tone(tmp_path / f"endpoint-{index}.wav", 660.0)

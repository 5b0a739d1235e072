"""The page legs of a call, signalling only (labelled SDPs, no connection anywhere).

``BrowserCallService.page_attach`` is how a reloaded page binds a new connection to
a live call: its SDP goes to the peer as a re-offer (the peer re-answers; the call,
its id and the peer's side stay), and each attach numbers a new page leg that
replaces the earlier one. A call whose media is the node's (not a page's), an
unknown call and an ended call are refused; a replaced leg's re-offer is refused.
"""

from __future__ import annotations

import asyncio

import pytest

from p2pnode.app.browser_calls import BrowserCallService, StaleRenegotiationError, page_media
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia
from p2pnode.sessions.media import SilenceSource
from tests.integration.calls.callpair import ALICE, BOB, Switchboard
from tests.integration.calls.test_call_sdp_renegotiation import Labels

WAIT = 10.0


def test_each_attach_reoffers_and_replaces_the_page_leg_non_page_calls_refused() -> None:
    asyncio.run(_scenario())


async def _scenario() -> None:
    board = Switchboard()
    board.queues[ALICE], board.queues[BOB] = asyncio.Queue(), asyncio.Queue()
    b = Labels("bob")
    pumps = [asyncio.create_task(board.pump(name)) for name in (ALICE, BOB)]
    try:
        alice = BrowserCallService(ALICE, CallConfig(), board.sender(ALICE))
        bob = BrowserCallService(
            BOB,
            CallConfig(auto_answer=True),
            board.sender(BOB),
            answer_media=lambda: CallMedia(sdp=b),
        )
        async with alice, bob:  # their __aenter__ is typed as the base class
            board.services = {ALICE: alice, BOB: bob}
            call_id = await alice.dial(BOB, page_media("page offer 0"))
            async with asyncio.timeout(WAIT):
                await alice.wait_state(call_id, {CallState.ANSWERED})
            assert alice.page_leg(call_id) == 0
            first_answer = alice.remote_sdp(call_id)

            leg, generation = await alice.page_attach(call_id, "page offer 1")
            assert leg == 1
            async with asyncio.timeout(WAIT):  # bob holds it for his endpoint, which answers
                while bob.waiting_reoffer(call_id) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            held = bob.waiting_reoffer(call_id)
            assert held is not None and held.sdp == "page offer 1"
            assert held.generation == generation
            await bob.answer_reoffer(call_id, generation)
            async with asyncio.timeout(WAIT):  # the re-answer is the page's remote SDP now
                while alice.remote_sdp(call_id) == first_answer:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert b.answered[-1] == "page offer 1"

            leg, _ = await alice.page_attach(call_id, "page offer 2")  # a second page
            assert leg == 2 and alice.page_leg(call_id) == 2
            assert bob.state(call_id) is CallState.ANSWERED  # the peer's call never ended
            with pytest.raises(StaleRenegotiationError):  # the replaced page moves nothing
                await alice.page_reoffer(call_id, "replaced page's offer", leg=1)
            assert await alice.page_reoffer(call_id, "newest page's offer", leg=2) > generation

            with pytest.raises(KeyError):
                alice.page_leg(b"\x00" * 16)
            node_call = await alice.dial(BOB, CallMedia(source=SilenceSource()))
            with pytest.raises(StaleRenegotiationError):  # the node's media: not a page's
                await alice.page_attach(node_call, "page offer 3")
            await alice.hangup(node_call)
            await alice.hangup(call_id)
            async with asyncio.timeout(WAIT):
                await alice.wait_state(call_id, {CallState.HUNG_UP})
            with pytest.raises(StaleRenegotiationError):  # an ended call takes no leg
                await alice.page_attach(call_id, "page offer 4")
            assert alice.page_leg(call_id) == 2  # a refused attach numbers nothing
    finally:
        for task in pumps:
            task.cancel()

"""The demo's call step on loopback: each side names the other's tone, through our relay."""

from __future__ import annotations

import asyncio

from p2pnode.demo.calls import ALICE_HZ, BOB_HZ, run_call_demo


def test_demo_call_each_side_hears_the_other_through_the_relay() -> None:
    result = asyncio.run(run_call_demo(seconds=1.0))
    assert abs(result.alice_heard_hz - BOB_HZ) < 5, result
    assert abs(result.bob_heard_hz - ALICE_HZ) < 5, result
    assert result.ok
    assert result.path is not None and result.path.startswith("relay"), result
    assert result.codec == "audio/opus"

"""The silence rule of relay failover (``sessions.call_failover``), as a case table.

A connection that has brought frames fails over after ``silence_after`` of
silence; one that never brought any gets ``connect_grace``; after
``max_failovers`` the verdict is to fail; a re-offer waits ``reoffer_timeout``.
"""

from __future__ import annotations

import pytest

from p2pnode.sessions.call_config import CallConfig, MediaPath
from p2pnode.sessions.call_failover import FailoverStep, pending_expired, silence_step
from p2pnode.sessions.call_legs import MediaLeg

CONFIG = CallConfig(silence_after=1.0, connect_grace=6.0, reoffer_timeout=4.0, max_failovers=2)


def leg(started: float, last_frame_at: float | None) -> MediaLeg:
    made = MediaLeg(0, MediaPath(), None)
    made.started, made.last_frame_at = started, last_frame_at
    return made


@pytest.mark.parametrize(
    ("started", "last_frame", "failovers", "now", "step"),
    [
        (100.0, 105.0, 0, 105.9, FailoverStep.KEEP),  # frames flowing
        (100.0, 105.0, 0, 106.0, FailoverStep.REOFFER),  # 1 s of silence
        (100.0, 105.0, 1, 107.0, FailoverStep.REOFFER),
        (100.0, 105.0, 2, 106.0, FailoverStep.FAIL),  # no failover left
        (100.0, None, 0, 105.9, FailoverStep.KEEP),  # a new connection's grace
        (100.0, None, 0, 106.0, FailoverStep.REOFFER),  # never brought a frame
        (100.0, None, 2, 106.0, FailoverStep.FAIL),
        (100.0, None, 2, 101.0, FailoverStep.KEEP),  # out of failovers but not silent
    ],
)
def test_silence_step(
    started: float, last_frame: float | None, failovers: int, now: float, step: FailoverStep
) -> None:
    assert silence_step(leg(started, last_frame), failovers, CONFIG, now) is step


def test_a_reoffer_waits_reoffer_timeout_for_its_answer() -> None:
    pending = leg(50.0, None)
    assert not pending_expired(pending, CONFIG, 53.9)
    assert pending_expired(pending, CONFIG, 54.0)

"""Relay failover's watch: when a live call's silence means its path is dead.

Why a module: the rule is the part of failover that must not drift (about one
second of silence, not ICE's 30 s consent timeout), and it is pure: the
service feeds it the current connection's times and acts on the verdict
(re-offer on the next path, or give up after ``max_failovers``). Only the
caller watches; the callee answers the caller's re-offer on its own next path.
A new connection gets ``connect_grace`` to bring its first frame; a re-offer
unanswered after ``reoffer_timeout`` is given up so the next one can go.
"""

from __future__ import annotations

import enum

from p2pnode.sessions.call_config import CallConfig
from p2pnode.sessions.call_legs import MediaLeg

__all__ = ["FailoverStep", "pending_expired", "silence_step"]


class FailoverStep(enum.Enum):
    KEEP = "keep"  # media flows, or its time has not come
    REOFFER = "reoffer"  # silent: re-offer on the next path
    FAIL = "fail"  # silent, and no failover left


def pending_expired(pending: MediaLeg, config: CallConfig, now: float) -> bool:
    """A re-offer waited longer than ``reoffer_timeout`` for its answer."""
    return now - pending.started >= config.reoffer_timeout


def silence_step(leg: MediaLeg, failovers: int, config: CallConfig, now: float) -> FailoverStep:
    """What ``leg``'s silence at ``now`` calls for, after ``failovers`` failovers so far."""
    if leg.last_frame_at is None:
        since, limit = leg.started, config.connect_grace
    else:
        since, limit = leg.last_frame_at, config.silence_after
    if now - since < limit:
        return FailoverStep.KEEP
    if failovers >= config.max_failovers:
        return FailoverStep.FAIL
    return FailoverStep.REOFFER

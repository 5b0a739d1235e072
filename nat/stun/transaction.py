"""STUN client transactions over UDP: the RFC 8489 §6.2.1 retransmission timer, sans-IO.

RFC 8489 §6.2.1: "the client SHOULD retransmit a STUN request message starting
with an interval of RTO ("Retransmission TimeOut"), doubling after each
retransmission ... Retransmissions continue until a response is received, or
until a total of Rc requests have been sent ... If, after the last request, a
duration equal to Rm times the RTO has passed without a response ... the client
SHOULD consider the transaction to have failed."

The RFC's defaults (RTO 500 ms, Rc 7, Rm 16) give up after 39.5 s; NAT
discovery treats a timeout as an answer ("no response: filtered"), so it uses a
shorter ``RetransmitPolicy``. The clock is a parameter: ``now`` goes in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["RFC8489_POLICY", "ClientTransaction", "RetransmitPolicy", "TransactionState"]


@dataclass(frozen=True)
class RetransmitPolicy:
    """RTO in seconds, Rc transmissions in all, Rm RTOs of final wait."""

    rto: float = 0.5
    rc: int = 7
    rm: int = 16

    def __post_init__(self) -> None:
        if self.rto <= 0 or self.rc < 1 or self.rm < 1:
            raise ValueError("rto must be > 0, rc and rm >= 1")

    def send_offsets(self) -> tuple[float, ...]:
        """Times after the first send at which each transmission happens: 0, RTO, 3 RTO, ..."""
        return tuple(self.rto * (2**k - 1) for k in range(self.rc))

    @property
    def timeout(self) -> float:
        """Time after the first send at which the transaction fails."""
        return self.send_offsets()[-1] + self.rm * self.rto


RFC8489_POLICY = RetransmitPolicy()


class TransactionState(enum.Enum):
    WAITING = "waiting"
    ANSWERED = "answered"
    TIMED_OUT = "timed out"


class ClientTransaction:
    """One request's retransmission schedule; the owner sends, matches and reports."""

    def __init__(self, policy: RetransmitPolicy, now: float) -> None:
        self._schedule = [now + offset for offset in policy.send_offsets()]
        self._deadline = now + policy.timeout
        self._sent = 1  # the caller sends the first copy at ``now``
        self.state = TransactionState.WAITING

    def next_deadline(self) -> float | None:
        if self.state is not TransactionState.WAITING:
            return None
        if self._sent < len(self._schedule):
            return self._schedule[self._sent]
        return self._deadline

    def on_timer(self, now: float) -> bool:
        """Advance to ``now``; True if the request should be sent again now."""
        if self.state is not TransactionState.WAITING:
            return False
        if self._sent < len(self._schedule) and now >= self._schedule[self._sent]:
            # Late timers send once, not a burst for every missed slot.
            while self._sent < len(self._schedule) and now >= self._schedule[self._sent]:
                self._sent += 1
            return True
        if self._sent >= len(self._schedule) and now >= self._deadline:
            self.state = TransactionState.TIMED_OUT
        return False

    def on_response(self) -> None:
        if self.state is TransactionState.WAITING:
            self.state = TransactionState.ANSWERED

    @property
    def transmissions(self) -> int:
        return self._sent

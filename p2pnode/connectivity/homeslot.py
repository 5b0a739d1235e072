"""One home slot of a peer: the attach/keepalive state machine as a table.

The peer core (``homes.py``) keeps one ``HomeSlot`` per home it wants::

    HELLO --challenge--> ATTACHING --attached--> ATTACHED --keepalive due--> CHECKING
      ^                     |  refused/timeout -> LOST         ^   ack ok  |
      +-------- unknown session (the home forgot us) ----------+-----------+
                                                   CHECKING --timeout--> LOST

An undefined (state, input) pair raises ``TransitionError``; the datagram
boundary counts it as a drop. LOST is terminal: the slot is removed and refilled.
The keepalive interval follows the NAT's measured binding lifetime
(``keepalive_for_lifetime``), or a safe default under 25 s.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pnode.connectivity.contact import HomeEntry

__all__ = [
    "DEFAULT_KEEPALIVE",
    "MIN_KEEPALIVE",
    "TRANSITIONS",
    "HomeSlot",
    "SlotInput",
    "SlotState",
    "TransitionError",
    "keepalive_for_lifetime",
]

DEFAULT_KEEPALIVE = 20.0  # seconds: under the 30 s many NATs keep an idle UDP mapping
MIN_KEEPALIVE = 1.0


def keepalive_for_lifetime(lower: float | None) -> float:
    """Keepalive interval for a NAT that kept an idle mapping at least ``lower`` seconds
    (``nat.lifetime.MappingLifetime.lower``): half of it, within [1, 20] s; unknown: 20 s."""
    if lower is None or lower <= 0:
        return DEFAULT_KEEPALIVE
    return min(max(lower / 2, MIN_KEEPALIVE), DEFAULT_KEEPALIVE)


class TransitionError(Exception):
    """An input that the slot's state table does not define for its state."""


class SlotState(enum.Enum):
    HELLO = "hello"  # HELLO sent, waiting for the challenge
    ATTACHING = "attaching"  # signed ATTACH sent
    ATTACHED = "attached"  # session up, next keepalive scheduled
    CHECKING = "checking"  # keepalive sent, waiting for its ack
    LOST = "lost"  # terminal: the slot is dropped and refilled


class SlotInput(enum.Enum):
    CHALLENGE = "challenge"
    ATTACHED_OK = "attached ok"
    REFUSED = "refused"
    KEEPALIVE_DUE = "keepalive due"
    ACK_OK = "ack ok"
    ACK_UNKNOWN = "ack unknown session"
    RETRY = "retry"
    TIMEOUT = "timeout"


_S, _I = SlotState, SlotInput  # table shorthand
TRANSITIONS: dict[tuple[SlotState, SlotInput], SlotState] = {
    (_S.HELLO, _I.CHALLENGE): _S.ATTACHING,
    (_S.HELLO, _I.RETRY): _S.HELLO,
    (_S.HELLO, _I.TIMEOUT): _S.LOST,
    (_S.ATTACHING, _I.CHALLENGE): _S.ATTACHING,  # a retransmitted HELLO's second answer
    (_S.ATTACHING, _I.ATTACHED_OK): _S.ATTACHED,
    (_S.ATTACHING, _I.REFUSED): _S.LOST,
    (_S.ATTACHING, _I.RETRY): _S.ATTACHING,
    (_S.ATTACHING, _I.TIMEOUT): _S.LOST,
    (_S.ATTACHED, _I.KEEPALIVE_DUE): _S.CHECKING,
    (_S.ATTACHED, _I.ACK_OK): _S.ATTACHED,  # a late duplicate ack
    (_S.ATTACHED, _I.ACK_UNKNOWN): _S.HELLO,
    (_S.CHECKING, _I.ACK_OK): _S.ATTACHED,
    (_S.CHECKING, _I.ACK_UNKNOWN): _S.HELLO,  # the home restarted: attach again
    (_S.CHECKING, _I.RETRY): _S.CHECKING,
    (_S.CHECKING, _I.TIMEOUT): _S.LOST,
}


@dataclass(slots=True)
class HomeSlot:
    """One home being attached or kept: the state and the timers and ids that go with it."""

    home: HomeEntry
    state: SlotState
    txid: bytes
    started: float
    retry_at: float
    give_up_at: float
    nonce: bytes = b""
    token: bytes = b""
    keepalive: float = DEFAULT_KEEPALIVE
    set_txid: bytes | None = None  # presence/allow-list update not yet acknowledged
    set_retry_at: float = float("inf")
    set_tries: int = 0

    def fire(self, event: SlotInput) -> None:
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise TransitionError(f"{event.value} in state {self.state.value}")
        self.state = target

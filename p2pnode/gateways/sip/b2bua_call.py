"""The state of one B2BUA call: its legs, its table of states, and small pure helpers.

Split out of :mod:`b2bua` (which holds every call and turns SIP events into
actions): a call moves only through :data:`TRANSITIONS`; an undefined (state,
event) pair raises :class:`dialog.DialogError`, which the gateway drops and
counts (a peer cannot make a call reach a state the table does not name).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from p2pnode.gateways.sip.anchor import MediaPorts
from p2pnode.gateways.sip.dialog import Dialog, DialogError
from p2pnode.gateways.sip.media import Address, Side
from p2pnode.gateways.sip.message import SipRequest, SipResponse
from p2pnode.gateways.sip.transaction import ClientKey, ServerKey

__all__ = [
    "SESSION_GRACE",
    "TRANSITIONS",
    "Call",
    "CallEvent",
    "CallState",
    "Leg",
    "Pending",
    "ack_cseq",
    "failure_rank",
    "record_routes",
    "session_interval",
    "source_of",
]

SESSION_GRACE = 32.0  # RFC 4028 §10: BYE when a session is not refreshed within SE + 32 s


class CallState(enum.Enum):
    RINGING = "ringing"  # INVITEs out, no final answer yet
    ANSWERED = "answered"  # 2xx sent to A, A's ACK not yet in
    CONFIRMED = "confirmed"
    ENDED = "ended"


class CallEvent(enum.Enum):
    ANSWER = "answer"
    ACK = "ack"
    FAIL = "fail"
    CANCEL = "cancel"
    BYE = "bye"


TRANSITIONS: dict[tuple[CallState, CallEvent], CallState] = {
    (CallState.RINGING, CallEvent.ANSWER): CallState.ANSWERED,
    (CallState.RINGING, CallEvent.FAIL): CallState.ENDED,
    (CallState.RINGING, CallEvent.CANCEL): CallState.ENDED,
    (CallState.ANSWERED, CallEvent.ACK): CallState.CONFIRMED,
    (CallState.ANSWERED, CallEvent.BYE): CallState.ENDED,
    (CallState.CONFIRMED, CallEvent.ACK): CallState.CONFIRMED,
    (CallState.CONFIRMED, CallEvent.BYE): CallState.ENDED,
}


@dataclass(slots=True)
class Leg:
    side: Side
    destination: Address
    reliable: bool
    dialog: Dialog | None = None
    invite: SipRequest | None = None  # leg B: the INVITE we sent on this branch
    key: ClientKey | None = None
    final: int | None = None
    ack: SipRequest | None = None  # the last ACK we sent for a 2xx on this leg


@dataclass(frozen=True, slots=True)
class Pending:
    """A request forwarded from ``side``: its answer goes back to ``key``."""

    call_ref: str
    side: Side
    key: ServerKey
    request: SipRequest


@dataclass(slots=True)
class Call:
    ref: str
    state: CallState
    a: Leg
    a_key: ServerKey
    a_invite: SipRequest
    a_tag: str
    b_call_id: str
    b_tag: str
    accounts: tuple[str, ...]
    media: MediaPorts
    branches: list[Leg] = field(default_factory=list)
    winner: Leg | None = None
    a_final: SipResponse | None = None
    b_ack_waits_for_a: bool = False
    acks_owed: dict[Side, int] = field(default_factory=dict)  # re-INVITE CSeq to ACK
    deadline: float = math.inf  # Timer C while ringing, then the session-timer expiry

    def move(self, event: CallEvent) -> None:
        state = TRANSITIONS.get((self.state, event))
        if state is None:
            raise DialogError(f"{event.value} in a {self.state.value} call")
        self.state = state

    def leg(self, side: Side) -> Leg | None:
        return self.a if side is Side.A else self.winner


def ack_cseq(call: Call, side: Side, cseq: int) -> int:
    leg = call.leg(side)
    return leg.dialog.remote_seq or 0 if leg is not None and leg.dialog is not None else 0


def session_interval(response: SipResponse) -> float:
    """RFC 4028: Session-Expires of a 2xx plus the grace, or no expiry without one."""
    value = (response.header("Session-Expires") or "").split(";", 1)[0].strip()
    if not value.isascii() or not value.isdecimal() or len(value) > 9:
        return math.inf
    return int(value) + SESSION_GRACE


def record_routes(call: Call) -> list[tuple[str, str]]:
    """§12.1.1: a UAS copies Record-Route into its dialog-creating responses, so a
    caller behind a record-routing proxy (another SIP network's) keeps it in the path."""
    return [("Record-Route", value) for value in call.a_invite.header_values("Record-Route")]


def source_of(call: Call, side: Side) -> Address:
    leg = call.leg(side)
    return leg.destination if leg is not None else ("0.0.0.0", 0)


def failure_rank(status: int) -> tuple[int, int]:
    """RFC 3261 §16.7 step 6 in short: 6xx first, then 486/480 over other 4xx, then 5xx."""
    if status >= 600:
        return (0, status)
    if status in (486, 480, 487):
        return (1, status)
    if 400 <= status < 500:
        return (2, status)
    return (3, status)

"""The call session state machine: one call between two peers, sans-IO.

Why a table: a call crosses two networks and two humans, so messages cross
each other (a hangup meets an answer, two peers dial each other at once). Every
(state, event) pair that is allowed is written in ``TRANSITIONS``; any other
pair raises ``CallStateError`` rather than being silently ignored, so the
service drops and counts the stray message and the tests can walk every pair.

Invariants:
- the machine never reads the clock: every input carries ``now``; the one
  timer it needs (``deadline``) is returned for the caller to arm;
- it never sends: it returns the ``CallAction`` values the service performs
  (send a signal, start or stop media); SDP is the service's business;
- once in a terminal state, only explicit idempotent entries (a crossing
  remote hangup or cancel) are accepted.

Glare (both peers dial each other at once) is resolved by ``glare_winner``:
the call placed by the peer with the smaller peer id survives on both sides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Call",
    "CallAction",
    "CallDirection",
    "CallEvent",
    "CallState",
    "CallStateError",
    "CallTimers",
    "Transition",
    "glare_winner",
]


class CallState(enum.Enum):
    """Where one call stands, from this peer's point of view."""

    NEW = "new"
    DIALLING = "dialling"  # invite sent, no reply yet
    RINGING_REMOTE = "ringing-remote"  # the callee's device rings
    OFFERED = "offered"  # an invite arrived, policy not applied yet
    RINGING_LOCAL = "ringing-local"  # our device rings
    REQUESTED = "requested"  # a non-contact's call waits silently in requests
    ANSWERED = "answered"
    # terminal states
    DECLINED = "declined"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    CANCELLED = "cancelled"
    HUNG_UP = "hung-up"
    REFUSED = "refused"  # policy refused a non-contact
    SUPERSEDED = "superseded"  # lost a glare: the other peer's call carries on
    FAILED = "failed"


TERMINAL_STATES = frozenset(
    {
        CallState.DECLINED,
        CallState.BUSY,
        CallState.NO_ANSWER,
        CallState.CANCELLED,
        CallState.HUNG_UP,
        CallState.REFUSED,
        CallState.SUPERSEDED,
        CallState.FAILED,
    }
)


class CallDirection(enum.Enum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


class CallEvent(enum.Enum):
    """Inputs: LOCAL_* come from the user or policy, REMOTE_* from decoded signals."""

    LOCAL_DIAL = "local-dial"
    LOCAL_RING = "local-ring"  # policy: ring the device
    LOCAL_QUEUE = "local-queue"  # policy: put a non-contact's call in requests
    LOCAL_REFUSE = "local-refuse"  # policy: refuse a non-contact
    LOCAL_BUSY = "local-busy"  # already in a call
    LOCAL_ANSWER = "local-answer"
    LOCAL_DECLINE = "local-decline"
    LOCAL_HANGUP = "local-hangup"  # before the answer this is a cancel
    REMOTE_INVITE = "remote-invite"
    REMOTE_RINGING = "remote-ringing"
    REMOTE_ANSWER = "remote-answer"
    REMOTE_DECLINE = "remote-decline"
    REMOTE_NO_ANSWER = "remote-no-answer"  # the callee's ring timer ran out
    REMOTE_REFUSED = "remote-refused"
    REMOTE_BUSY = "remote-busy"
    REMOTE_CANCEL = "remote-cancel"
    REMOTE_HANGUP = "remote-hangup"
    TIMEOUT = "timeout"  # the deadline this machine asked for has passed
    MEDIA_FAILED = "media-failed"
    GLARE_LOST = "glare-lost"
    LOCAL_REOFFER = "local-reoffer"  # move the media to a new path (relay failover)
    REMOTE_REOFFER = "remote-reoffer"
    REMOTE_REANSWER = "remote-reanswer"


class CallAction(enum.Enum):
    """What the service must do after a transition."""

    SEND_INVITE = "send-invite"
    SEND_RINGING = "send-ringing"
    SEND_ANSWER = "send-answer"
    SEND_DECLINE = "send-decline"
    SEND_NO_ANSWER = "send-no-answer"
    SEND_REFUSED = "send-refused"
    SEND_BUSY = "send-busy"
    SEND_CANCEL = "send-cancel"
    SEND_HANGUP = "send-hangup"
    SEND_REOFFER = "send-reoffer"
    SEND_REANSWER = "send-reanswer"
    START_MEDIA = "start-media"
    STOP_MEDIA = "stop-media"


class CallStateError(Exception):
    """An event that is not defined in the current state (a bug or a stray message)."""

    def __init__(self, state: CallState, event: CallEvent) -> None:
        super().__init__(f"event {event.value} is not defined in state {state.value}")
        self.state = state
        self.event = event


class _Timer(enum.Enum):
    NONE = "none"
    UNREACHABLE = "unreachable"  # no ringing came back
    NO_ANSWER = "no-answer"  # the caller's patience
    RING = "ring"  # how long the callee's device rings


@dataclass(frozen=True, slots=True)
class _Entry:
    target: CallState
    actions: tuple[CallAction, ...]
    timer: _Timer


_S = CallState
_E = CallEvent
_A = CallAction
_T = _Timer

_WAITING_OUT = (_S.DIALLING, _S.RINGING_REMOTE)
_WAITING_IN = (_S.RINGING_LOCAL, _S.REQUESTED)


def _table() -> dict[tuple[CallState, CallEvent], _Entry]:
    table: dict[tuple[CallState, CallEvent], _Entry] = {
        (_S.NEW, _E.LOCAL_DIAL): _Entry(_S.DIALLING, (_A.SEND_INVITE,), _T.UNREACHABLE),
        (_S.NEW, _E.REMOTE_INVITE): _Entry(_S.OFFERED, (), _T.NONE),
        (_S.OFFERED, _E.LOCAL_RING): _Entry(_S.RINGING_LOCAL, (_A.SEND_RINGING,), _T.RING),
        # A request rings on the caller's side too: the caller cannot tell it was queued.
        (_S.OFFERED, _E.LOCAL_QUEUE): _Entry(_S.REQUESTED, (_A.SEND_RINGING,), _T.RING),
        (_S.OFFERED, _E.LOCAL_REFUSE): _Entry(_S.REFUSED, (_A.SEND_REFUSED,), _T.NONE),
        (_S.OFFERED, _E.LOCAL_BUSY): _Entry(_S.BUSY, (_A.SEND_BUSY,), _T.NONE),
        (_S.OFFERED, _E.LOCAL_ANSWER): _Entry(
            _S.ANSWERED, (_A.SEND_ANSWER, _A.START_MEDIA), _T.NONE
        ),
        (_S.OFFERED, _E.REMOTE_CANCEL): _Entry(_S.CANCELLED, (), _T.NONE),
        (_S.OFFERED, _E.GLARE_LOST): _Entry(_S.SUPERSEDED, (), _T.NONE),
        (_S.DIALLING, _E.REMOTE_RINGING): _Entry(_S.RINGING_REMOTE, (), _T.NO_ANSWER),
        (_S.DIALLING, _E.TIMEOUT): _Entry(_S.FAILED, (_A.SEND_CANCEL,), _T.NONE),
        (_S.RINGING_REMOTE, _E.TIMEOUT): _Entry(_S.NO_ANSWER, (_A.SEND_CANCEL,), _T.NONE),
        (_S.ANSWERED, _E.LOCAL_HANGUP): _Entry(
            _S.HUNG_UP, (_A.SEND_HANGUP, _A.STOP_MEDIA), _T.NONE
        ),
        (_S.ANSWERED, _E.REMOTE_HANGUP): _Entry(_S.HUNG_UP, (_A.STOP_MEDIA,), _T.NONE),
        # The caller gave up while our answer was on its way: its cancel ends the call.
        (_S.ANSWERED, _E.REMOTE_CANCEL): _Entry(_S.HUNG_UP, (_A.STOP_MEDIA,), _T.NONE),
        (_S.ANSWERED, _E.LOCAL_REOFFER): _Entry(_S.ANSWERED, (_A.SEND_REOFFER,), _T.NONE),
        (_S.ANSWERED, _E.REMOTE_REOFFER): _Entry(_S.ANSWERED, (_A.SEND_REANSWER,), _T.NONE),
        (_S.ANSWERED, _E.REMOTE_REANSWER): _Entry(_S.ANSWERED, (), _T.NONE),
        (_S.ANSWERED, _E.MEDIA_FAILED): _Entry(_S.FAILED, (_A.SEND_HANGUP, _A.STOP_MEDIA), _T.NONE),
    }
    for state in _WAITING_OUT:
        table[(state, _E.REMOTE_ANSWER)] = _Entry(_S.ANSWERED, (_A.START_MEDIA,), _T.NONE)
        table[(state, _E.REMOTE_DECLINE)] = _Entry(_S.DECLINED, (), _T.NONE)
        table[(state, _E.REMOTE_NO_ANSWER)] = _Entry(_S.NO_ANSWER, (), _T.NONE)
        table[(state, _E.REMOTE_REFUSED)] = _Entry(_S.REFUSED, (), _T.NONE)
        table[(state, _E.REMOTE_BUSY)] = _Entry(_S.BUSY, (), _T.NONE)
        table[(state, _E.LOCAL_HANGUP)] = _Entry(_S.CANCELLED, (_A.SEND_CANCEL,), _T.NONE)
        table[(state, _E.GLARE_LOST)] = _Entry(_S.SUPERSEDED, (_A.SEND_CANCEL,), _T.NONE)
        table[(state, _E.MEDIA_FAILED)] = _Entry(_S.FAILED, (_A.SEND_CANCEL,), _T.NONE)
    for state in _WAITING_IN:
        table[(state, _E.LOCAL_ANSWER)] = _Entry(
            _S.ANSWERED, (_A.SEND_ANSWER, _A.START_MEDIA), _T.NONE
        )
        table[(state, _E.LOCAL_DECLINE)] = _Entry(_S.DECLINED, (_A.SEND_DECLINE,), _T.NONE)
        table[(state, _E.LOCAL_HANGUP)] = _Entry(_S.DECLINED, (_A.SEND_DECLINE,), _T.NONE)
        table[(state, _E.REMOTE_CANCEL)] = _Entry(_S.CANCELLED, (), _T.NONE)
        table[(state, _E.TIMEOUT)] = _Entry(_S.NO_ANSWER, (_A.SEND_NO_ANSWER,), _T.NONE)
        table[(state, _E.MEDIA_FAILED)] = _Entry(_S.FAILED, (_A.SEND_DECLINE,), _T.NONE)
    # Messages that cross a local end are expected: accept them and do nothing.
    for state in TERMINAL_STATES:
        table[(state, _E.REMOTE_HANGUP)] = _Entry(state, (), _T.NONE)
        table[(state, _E.REMOTE_CANCEL)] = _Entry(state, (), _T.NONE)
    return table


TRANSITIONS: dict[tuple[CallState, CallEvent], _Entry] = _table()


@dataclass(frozen=True, slots=True)
class CallTimers:
    """Seconds; the caller's ``no_answer_after`` is the configured no-answer time."""

    unreachable_after: float = 10.0
    no_answer_after: float = 45.0
    ring_for: float = 60.0


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of one event: where we came from, where we are, what to do."""

    old: CallState
    new: CallState
    event: CallEvent
    actions: tuple[CallAction, ...]
    deadline: float | None


def glare_winner(local_peer: str, remote_peer: str) -> bool:
    """True when our own outgoing call survives a glare with ``remote_peer``.

    Both sides evaluate the same total order on peer ids, so exactly one of
    the two crossing calls survives and both peers agree which.
    """
    if local_peer == remote_peer:
        raise ValueError("a peer cannot glare with itself")
    return local_peer < remote_peer


class Call:
    """One call's state; feed it events with ``handle`` and deadlines with ``poll``."""

    def __init__(self, direction: CallDirection, timers: CallTimers | None = None) -> None:
        self.direction = direction
        self.timers = timers or CallTimers()
        self.state = CallState.NEW
        self.deadline: float | None = None

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES

    def can_handle(self, event: CallEvent) -> bool:
        return (self.state, event) in TRANSITIONS

    def handle(self, event: CallEvent, now: float) -> Transition:
        """Apply one event; raises ``CallStateError`` for an undefined pair (state unchanged)."""
        if event is CallEvent.LOCAL_DIAL and self.direction is not CallDirection.OUTGOING:
            raise CallStateError(self.state, event)
        if event is CallEvent.REMOTE_INVITE and self.direction is not CallDirection.INCOMING:
            raise CallStateError(self.state, event)
        entry = TRANSITIONS.get((self.state, event))
        if entry is None:
            raise CallStateError(self.state, event)
        old = self.state
        self.state = entry.target
        if entry.timer is _Timer.NONE:
            self.deadline = None
        else:
            self.deadline = now + self._seconds(entry.timer)
        return Transition(old, self.state, event, entry.actions, self.deadline)

    def poll(self, now: float) -> Transition | None:
        """Fire TIMEOUT when the deadline has passed; None otherwise."""
        if self.deadline is None or now < self.deadline:
            return None
        return self.handle(CallEvent.TIMEOUT, now)

    def _seconds(self, timer: _Timer) -> float:
        if timer is _Timer.UNREACHABLE:
            return self.timers.unreachable_after
        if timer is _Timer.NO_ANSWER:
            return self.timers.no_answer_after
        return self.timers.ring_for

"""The call state machine in virtual time: every (state, event) pair, scenarios, glare.

The scenario tests state the expected outcomes independently of the table;
the hypothesis test wires a caller and a callee machine through two FIFO
channels and checks that, whatever the users do and whenever the messages
cross, the two sides never disagree about whether the call is up.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.sessions.call import (
    TERMINAL_STATES,
    TRANSITIONS,
    Call,
    CallAction,
    CallDirection,
    CallEvent,
    CallState,
    CallStateError,
    CallTimers,
    glare_winner,
)

TIMERS = CallTimers(unreachable_after=5.0, no_answer_after=30.0, ring_for=40.0)

# What the far side sees when we perform an action (the service maps them the same way).
WIRE = {
    CallAction.SEND_INVITE: CallEvent.REMOTE_INVITE,
    CallAction.SEND_RINGING: CallEvent.REMOTE_RINGING,
    CallAction.SEND_ANSWER: CallEvent.REMOTE_ANSWER,
    CallAction.SEND_DECLINE: CallEvent.REMOTE_DECLINE,
    CallAction.SEND_NO_ANSWER: CallEvent.REMOTE_NO_ANSWER,
    CallAction.SEND_REFUSED: CallEvent.REMOTE_REFUSED,
    CallAction.SEND_BUSY: CallEvent.REMOTE_BUSY,
    CallAction.SEND_CANCEL: CallEvent.REMOTE_CANCEL,
    CallAction.SEND_HANGUP: CallEvent.REMOTE_HANGUP,
    CallAction.SEND_REOFFER: CallEvent.REMOTE_REOFFER,
    CallAction.SEND_REANSWER: CallEvent.REMOTE_REANSWER,
}


def call_in(state: CallState, direction: CallDirection) -> Call:
    call = Call(direction, TIMERS)
    call.state = state
    return call


@pytest.mark.parametrize("direction", list(CallDirection))
@pytest.mark.parametrize("state", list(CallState))
def test_every_pair_is_defined_or_an_error_that_changes_nothing(
    state: CallState, direction: CallDirection
) -> None:
    for event in CallEvent:
        call = call_in(state, direction)
        call.deadline = 99.0
        try:
            transition = call.handle(event, now=1.0)
        except CallStateError as error:
            assert (error.state, error.event) == (state, event)
            assert call.state is state  # an undefined pair changes nothing
            assert call.deadline == 99.0
            assert (state, event) not in TRANSITIONS or event in (
                CallEvent.LOCAL_DIAL,
                CallEvent.REMOTE_INVITE,
            )
            continue
        assert (state, event) in TRANSITIONS
        assert transition.old is state
        assert transition.new is call.state
        if state in TERMINAL_STATES:
            # the only things a finished call accepts are crossing hangups, silently
            assert call.state is state
            assert transition.actions == ()
        if call.state in TERMINAL_STATES:
            assert call.deadline is None


def test_terminal_states_have_no_way_out_and_every_live_state_a_way_to_end() -> None:
    for (state, _), entry in TRANSITIONS.items():
        if state in TERMINAL_STATES:
            assert entry.target is state
    live = set(CallState) - TERMINAL_STATES - {CallState.NEW}
    for state in live:
        assert any(
            s is state and entry.target in TERMINAL_STATES for (s, _), entry in TRANSITIONS.items()
        ), state


def test_direction_guards_dial_and_invite() -> None:
    with pytest.raises(CallStateError):
        Call(CallDirection.INCOMING).handle(CallEvent.LOCAL_DIAL, 0.0)
    with pytest.raises(CallStateError):
        Call(CallDirection.OUTGOING).handle(CallEvent.REMOTE_INVITE, 0.0)


def test_answered_call_then_hangup() -> None:
    caller = Call(CallDirection.OUTGOING, TIMERS)
    assert caller.handle(CallEvent.LOCAL_DIAL, 0.0).actions == (CallAction.SEND_INVITE,)
    assert caller.deadline == 5.0
    caller.handle(CallEvent.REMOTE_RINGING, 1.0)
    assert caller.state is CallState.RINGING_REMOTE
    assert caller.deadline == 31.0
    assert caller.handle(CallEvent.REMOTE_ANSWER, 2.0).actions == (CallAction.START_MEDIA,)
    deadline_after_answer: float | None = caller.deadline  # mypy narrowed it to float above
    assert deadline_after_answer is None
    transition = caller.handle(CallEvent.LOCAL_HANGUP, 9.0)
    assert transition.new is CallState.HUNG_UP
    assert transition.actions == (CallAction.SEND_HANGUP, CallAction.STOP_MEDIA)


def test_caller_hangs_up_while_ringing_callee_sees_cancelled() -> None:
    caller = Call(CallDirection.OUTGOING, TIMERS)
    callee = Call(CallDirection.INCOMING, TIMERS)
    caller.handle(CallEvent.LOCAL_DIAL, 0.0)
    callee.handle(CallEvent.REMOTE_INVITE, 0.1)
    assert callee.handle(CallEvent.LOCAL_RING, 0.1).actions == (CallAction.SEND_RINGING,)
    caller.handle(CallEvent.REMOTE_RINGING, 0.2)
    assert caller.handle(CallEvent.LOCAL_HANGUP, 3.0).actions == (CallAction.SEND_CANCEL,)
    assert caller.state is CallState.CANCELLED
    callee.handle(CallEvent.REMOTE_CANCEL, 3.1)
    assert callee.state is CallState.CANCELLED
    assert callee.deadline is None


def test_callee_declines_caller_sees_declined() -> None:
    callee = Call(CallDirection.INCOMING, TIMERS)
    callee.handle(CallEvent.REMOTE_INVITE, 0.0)
    callee.handle(CallEvent.LOCAL_RING, 0.0)
    assert callee.handle(CallEvent.LOCAL_DECLINE, 1.0).actions == (CallAction.SEND_DECLINE,)
    caller = call_in(CallState.RINGING_REMOTE, CallDirection.OUTGOING)
    caller.handle(CallEvent.REMOTE_DECLINE, 1.1)
    assert caller.state is CallState.DECLINED


def test_no_answer_after_the_configured_time_on_the_caller() -> None:
    caller = Call(CallDirection.OUTGOING, TIMERS)
    caller.handle(CallEvent.LOCAL_DIAL, 0.0)
    caller.handle(CallEvent.REMOTE_RINGING, 0.5)
    assert caller.poll(30.4) is None
    transition = caller.poll(30.5)
    assert transition is not None
    assert transition.new is CallState.NO_ANSWER
    assert transition.actions == (CallAction.SEND_CANCEL,)


def test_no_ringing_back_means_unreachable_failure() -> None:
    caller = Call(CallDirection.OUTGOING, TIMERS)
    caller.handle(CallEvent.LOCAL_DIAL, 0.0)
    transition = caller.poll(5.0)
    assert transition is not None and transition.new is CallState.FAILED


def test_callee_ring_timer_reports_no_answer_to_the_caller() -> None:
    callee = Call(CallDirection.INCOMING, TIMERS)
    callee.handle(CallEvent.REMOTE_INVITE, 0.0)
    callee.handle(CallEvent.LOCAL_QUEUE, 0.0)
    assert callee.state is CallState.REQUESTED
    transition = callee.poll(40.0)
    assert transition is not None
    assert transition.new is CallState.NO_ANSWER
    assert transition.actions == (CallAction.SEND_NO_ANSWER,)


@pytest.mark.parametrize(
    ("policy", "state", "action"),
    [
        (CallEvent.LOCAL_REFUSE, CallState.REFUSED, CallAction.SEND_REFUSED),
        (CallEvent.LOCAL_BUSY, CallState.BUSY, CallAction.SEND_BUSY),
        (CallEvent.LOCAL_ANSWER, CallState.ANSWERED, CallAction.SEND_ANSWER),
    ],
)
def test_policy_outcomes(policy: CallEvent, state: CallState, action: CallAction) -> None:
    callee = Call(CallDirection.INCOMING, TIMERS)
    callee.handle(CallEvent.REMOTE_INVITE, 0.0)
    transition = callee.handle(policy, 0.0)
    assert transition.new is state
    assert action in transition.actions


def test_glare_exactly_one_side_wins() -> None:
    a, b = "peer-aaaa", "peer-bbbb"
    assert glare_winner(a, b) != glare_winner(b, a)
    with pytest.raises(ValueError, match="itself"):
        glare_winner(a, a)
    loser = Call(CallDirection.OUTGOING, TIMERS)
    loser.handle(CallEvent.LOCAL_DIAL, 0.0)
    transition = loser.handle(CallEvent.GLARE_LOST, 0.1)
    assert transition.new is CallState.SUPERSEDED
    assert transition.actions == (CallAction.SEND_CANCEL,)


def test_reoffer_keeps_the_call_answered() -> None:
    caller = call_in(CallState.ANSWERED, CallDirection.OUTGOING)
    assert caller.handle(CallEvent.LOCAL_REOFFER, 0.0).actions == (CallAction.SEND_REOFFER,)
    callee = call_in(CallState.ANSWERED, CallDirection.INCOMING)
    assert callee.handle(CallEvent.REMOTE_REOFFER, 0.1).actions == (CallAction.SEND_REANSWER,)
    caller.handle(CallEvent.REMOTE_REANSWER, 0.2)
    assert caller.state is callee.state is CallState.ANSWERED
    with pytest.raises(CallStateError):
        call_in(CallState.RINGING_LOCAL, CallDirection.INCOMING).handle(
            CallEvent.REMOTE_REOFFER, 0.0
        )


# ---------------------------------------------------------------- two machines, hypothesis

USER_EVENTS = (
    CallEvent.LOCAL_ANSWER,
    CallEvent.LOCAL_DECLINE,
    CallEvent.LOCAL_HANGUP,
    CallEvent.LOCAL_RING,
    CallEvent.LOCAL_QUEUE,
    CallEvent.LOCAL_REFUSE,
    CallEvent.LOCAL_BUSY,
    CallEvent.LOCAL_REOFFER,
    CallEvent.MEDIA_FAILED,
)
STEP = st.one_of(
    st.tuples(st.sampled_from(("caller", "callee")), st.sampled_from(USER_EVENTS)),
    st.tuples(st.just("deliver"), st.sampled_from(("caller", "callee"))),
    st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=50.0)),
)


class Pair:
    def __init__(self) -> None:
        self.now = 0.0
        self.sides = {
            "caller": Call(CallDirection.OUTGOING, TIMERS),
            "callee": Call(CallDirection.INCOMING, TIMERS),
        }
        self.inbox: dict[str, deque[CallEvent]] = {"caller": deque(), "callee": deque()}
        self.dropped = 0

    def apply(self, side: str, event: CallEvent) -> bool:
        try:
            transition = self.sides[side].handle(event, self.now)
        except CallStateError:
            return False
        other = "callee" if side == "caller" else "caller"
        for action in transition.actions:
            if action in WIRE:
                self.inbox[other].append(WIRE[action])
        return True

    def deliver(self, side: str) -> None:
        if self.inbox[side]:
            event = self.inbox[side].popleft()
            if not self.apply(side, event):
                self.dropped += 1  # what the service does with a stray message

    def wait(self, seconds: float) -> None:
        self.now += seconds
        for side, call in self.sides.items():
            try:
                transition = call.poll(self.now)
            except CallStateError:  # pragma: no cover - the table defines every timeout
                raise
            if transition is not None:
                other = "callee" if side == "caller" else "caller"
                for action in transition.actions:
                    if action in WIRE:
                        self.inbox[other].append(WIRE[action])

    def settle(self) -> None:
        for _ in range(50):
            while self.inbox["caller"] or self.inbox["callee"]:
                self.deliver("caller")
                self.deliver("callee")
            callee = self.sides["callee"]
            if callee.state is CallState.OFFERED:
                self.apply("callee", CallEvent.LOCAL_RING)
                continue
            deadlines = [c.deadline for c in self.sides.values() if c.deadline is not None]
            if not deadlines:
                return
            self.wait(max(0.0, min(deadlines) - self.now))
        raise AssertionError("did not settle")


@given(st.lists(STEP, max_size=30))
def test_two_machines_never_disagree_about_an_answered_call(
    steps: list[tuple[str, object]],
) -> None:
    pair = Pair()
    pair.apply("caller", CallEvent.LOCAL_DIAL)
    for kind, value in steps:
        if kind == "deliver":
            assert isinstance(value, str)
            pair.deliver(value)
        elif kind == "wait":
            assert isinstance(value, float)
            pair.wait(value)
        else:
            assert isinstance(value, CallEvent)
            pair.apply(kind, value)
    pair.settle()
    caller, callee = pair.sides["caller"], pair.sides["callee"]
    for call in (caller, callee):
        assert call.ended or call.state is CallState.ANSWERED
    assert (caller.state is CallState.ANSWERED) == (callee.state is CallState.ANSWERED)
    if callee.state is CallState.DECLINED and caller.state is not CallState.CANCELLED:
        assert caller.state in (CallState.DECLINED, CallState.NO_ANSWER, CallState.FAILED)

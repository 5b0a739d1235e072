"""The supernode promotion table: total, graceful, hysteretic; hypothesis walks every pair."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.supernode import (
    TABLE,
    Action,
    Event,
    Hysteresis,
    Role,
    SupernodeState,
    accepts_allocations,
    load_event,
    runs_roles,
    step,
)

H = Hysteresis(promote_after=3, demote_after=3)


def test_table_is_total() -> None:
    assert set(TABLE) == set(itertools.product(Role, Event))


@pytest.mark.parametrize(("role", "event"), list(itertools.product(Role, Event)))
@pytest.mark.parametrize("streak", [0, 1, 2])
def test_every_pair_keeps_the_invariants(role: Role, event: Event, streak: int) -> None:
    before = SupernodeState(role, streak)
    transition = step(before, event, H)
    after = transition.state.role
    actions = set(transition.actions)
    # Actions are exactly the differences in what runs and what is accepted.
    assert (Action.START_ROLES in actions) == (not runs_roles(role) and runs_roles(after))
    assert (Action.STOP_ROLES in actions) == (runs_roles(role) and not runs_roles(after))
    assert (Action.ACCEPT_ALLOCATIONS in actions) == (
        not accepts_allocations(role) and accepts_allocations(after)
    )
    assert (Action.REFUSE_ALLOCATIONS in actions) == (
        accepts_allocations(role) and not accepts_allocations(after)
    )
    # Roles stop only after draining: never straight from serving under any load.
    if Action.STOP_ROLES in actions:
        assert role in (Role.DRAINING, Role.RETIRING)
        assert event in (Event.DRAINED, Event.DRAIN_TIMEOUT)
    # Opting out never leaves a node accepting or advertising.
    if event is Event.OPT_OUT:
        assert not accepts_allocations(after)
        assert Action.PUBLISH_ADVERT not in actions
        assert after in (Role.OPTED_OUT, Role.RETIRING)
    # An opted-out node ignores verdicts.
    if role is Role.OPTED_OUT and event is not Event.OPT_IN:
        assert after is Role.OPTED_OUT and not actions
    assert transition.reason


def run(events: list[Event], state: SupernodeState | None = None) -> SupernodeState:
    state = state or SupernodeState()
    for event in events:
        state = step(state, event, H).state
    return state


def test_promotion_needs_consecutive_public_verdicts() -> None:
    public, private = Event.VERDICT_PUBLIC, Event.VERDICT_NOT_PUBLIC
    assert run([public, public]).role is Role.CANDIDATE
    assert run([public, public, public]).role is Role.SUPERNODE
    assert run([public, public, private, public, public]).role is Role.CANDIDATE
    transition = step(run([public, public]), public, H)
    assert set(transition.actions) == {
        Action.START_ROLES,
        Action.ACCEPT_ALLOCATIONS,
        Action.PUBLISH_ADVERT,
    }


def test_demotion_drains_then_stops() -> None:
    supernode = SupernodeState(Role.SUPERNODE)
    private = Event.VERDICT_NOT_PUBLIC
    assert run([private, private], supernode).role is Role.SUPERNODE
    draining = run([private, private, private], supernode)
    assert draining.role is Role.DRAINING
    transition = step(draining, Event.DRAINED, H)
    assert transition.state.role is Role.CLIENT and transition.actions == (Action.STOP_ROLES,)


def test_load_shedding_keeps_serving() -> None:
    supernode = SupernodeState(Role.SUPERNODE)
    shed = step(supernode, Event.LOAD_HIGH, H)
    assert shed.state.role is Role.SHEDDING
    assert Action.REFUSE_ALLOCATIONS in shed.actions and Action.STOP_ROLES not in shed.actions
    back = step(shed.state, Event.LOAD_NORMAL, H)
    assert back.state.role is Role.SUPERNODE and Action.ACCEPT_ALLOCATIONS in back.actions


def test_load_event_water_marks() -> None:
    assert load_event(100, 100, Role.SUPERNODE, H) is Event.LOAD_HIGH
    assert load_event(99, 100, Role.SUPERNODE, H) is None
    assert load_event(90, 100, Role.SHEDDING, H) is None  # between the marks: no flapping
    assert load_event(79, 100, Role.SHEDDING, H) is Event.LOAD_NORMAL
    assert load_event(100, 100, Role.CLIENT, H) is None


def test_hysteresis_validates() -> None:
    with pytest.raises(ValueError):
        Hysteresis(promote_after=1)
    with pytest.raises(ValueError):
        Hysteresis(load_low=1.0, load_high=0.5)


@given(st.lists(st.sampled_from(list(Event)), max_size=60))
def test_random_walk_actions_track_the_role(events: list[Event]) -> None:
    """Applying the actions in order reproduces exactly what the role says should run."""
    state = SupernodeState()
    running = accepting = False
    for event in events:
        transition = step(state, event, H)
        for action in transition.actions:
            if action is Action.START_ROLES:
                assert not running
                running = True
            elif action is Action.STOP_ROLES:
                assert running
                running = accepting = False
            elif action is Action.ACCEPT_ALLOCATIONS:
                assert running and not accepting
                accepting = True
            elif action is Action.REFUSE_ALLOCATIONS:
                assert accepting
                accepting = False
        state = transition.state
        assert running == runs_roles(state.role)
        assert accepting == accepts_allocations(state.role)


@given(st.integers(0, 40), st.sampled_from([Role.CLIENT, Role.SUPERNODE]))
def test_flapping_verdicts_never_flip_the_role(flaps: int, role: Role) -> None:
    state = SupernodeState(role)
    for index in range(flaps):
        event = Event.VERDICT_PUBLIC if index % 2 else Event.VERDICT_NOT_PUBLIC
        state = step(state, event, H).state
        assert runs_roles(state.role) == runs_roles(role)

"""The sans-IO presence plan of hosted identities, in virtual time."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.app.sip_presence import PresencePlan, Publication
from p2pnode.connectivity.contact import PresenceStatus

ONLINE, OFFLINE = PresenceStatus.ONLINE, PresenceStatus.OFFLINE
T0 = 1_800_000_000.0  # wall-clock seconds


def test_online_on_register_offline_after_the_last_binding_with_rising_seqs() -> None:
    plan = PresencePlan(min_interval=3.0, republish=300.0)
    registered = {"alice"}
    plan.touch("alice")
    (first,) = plan.due(T0, registered.__contains__)
    assert (first.login, first.status, first.since) == ("alice", ONLINE, int(T0))
    assert plan.due(T0 + 1, registered.__contains__) == []  # nothing changed
    registered.clear()
    plan.touch("alice")
    assert plan.due(T0 + 1, registered.__contains__) == []  # coalesced until T0 + 3
    assert plan.next_deadline(T0 + 1) == T0 + 3
    (second,) = plan.due(T0 + 3, registered.__contains__)
    assert second.status is OFFLINE and second.seq > first.seq
    assert plan.due(T0 + 10, registered.__contains__) == []  # withdrawn: no longer looked at
    assert plan.next_deadline(T0 + 10) is None
    registered.add("alice")
    plan.touch("alice")
    (third,) = plan.due(T0 + 10, registered.__contains__)
    assert third.status is ONLINE and third.seq > second.seq


def test_flapping_is_coalesced_into_the_last_state() -> None:
    plan = PresencePlan(min_interval=3.0)
    registered = {"alice"}
    plan.touch("alice")
    assert len(plan.due(T0, registered.__contains__)) == 1
    published = []
    for step in range(1, 30):  # ten flaps a second for three seconds
        now = T0 + step / 10
        if step % 2:
            registered.discard("alice")
        else:
            registered.add("alice")
        plan.touch("alice")
        published += plan.due(now, registered.__contains__)
    assert published == []  # the state at T0 + 2.9 is online again: nothing to say
    registered.discard("alice")
    plan.touch("alice")
    assert [p.status for p in plan.due(T0 + 3.0, registered.__contains__)] == [OFFLINE]


def test_an_online_record_is_renewed_before_it_expires() -> None:
    plan = PresencePlan(min_interval=3.0, republish=300.0)
    plan.touch("alice")
    (first,) = plan.due(T0, lambda _login: True)
    assert plan.due(T0 + 299, lambda _login: True, sweep=True) == []
    assert plan.next_deadline(T0 + 299) is None  # nothing waits: renewals come from sweeps
    assert plan.due(T0 + 300, lambda _login: True) == []  # not touched, not swept
    (renewed,) = plan.due(T0 + 300, lambda _login: True, sweep=True)
    assert renewed.status is ONLINE and renewed.seq > first.seq
    assert renewed.since == first.since == int(T0)  # online since the registration


def test_a_lapsed_registration_is_found_by_a_sweep() -> None:
    plan = PresencePlan(min_interval=3.0)
    registered = {"alice"}
    plan.touch("alice")
    plan.due(T0, registered.__contains__)
    registered.clear()  # the binding expired: the registrar tells nobody
    assert plan.due(T0 + 5, registered.__contains__) == []
    (offline,) = plan.due(T0 + 5, registered.__contains__, sweep=True)
    assert offline.status is OFFLINE


def test_a_login_never_online_publishes_nothing() -> None:
    plan = PresencePlan()
    plan.touch("bob")  # e.g. a refused or removed registration
    assert plan.due(T0, lambda _login: False) == []
    assert plan.status("bob") is None


def test_a_failed_put_is_retried_after_the_interval_with_a_higher_seq() -> None:
    plan = PresencePlan(min_interval=3.0)
    plan.touch("alice")
    (first,) = plan.due(T0, lambda _login: True)
    plan.failed(first)
    assert plan.due(T0 + 1, lambda _login: True) == []
    (again,) = plan.due(T0 + 3, lambda _login: True)
    assert again.status is ONLINE and again.seq > first.seq


def test_a_failed_offline_put_is_retried_too() -> None:
    plan = PresencePlan(min_interval=3.0)
    plan.touch("alice")
    plan.due(T0, lambda _login: True)
    plan.touch("alice")
    (offline,) = plan.due(T0 + 3, lambda _login: False)
    plan.failed(offline)
    (again,) = plan.due(T0 + 6, lambda _login: False)
    assert again.status is OFFLINE and again.seq > offline.seq


def test_remembered_accounts_are_bounded() -> None:
    plan = PresencePlan(max_tracked=3)
    for index in range(10):
        plan.touch(f"user{index}")
    assert len(plan.due(T0, lambda _login: True)) == 3  # the rest were never taken in


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 20.0), st.sampled_from(["alice", "bob"]), st.booleans(), st.booleans()
        ),
        max_size=40,
    )
)
def test_seqs_rise_publishes_are_spaced_and_the_last_state_is_published(
    steps: list[tuple[float, str, bool, bool]],
) -> None:
    plan = PresencePlan(min_interval=3.0, republish=300.0)
    registered: set[str] = set()
    out: list[tuple[float, Publication]] = []
    now = T0
    for advance, login, online, sweep in steps:
        now += advance
        (registered.add if online else registered.discard)(login)
        plan.touch(login)
        out += [(now, p) for p in plan.due(now, registered.__contains__, sweep=sweep)]
    now += 3.0  # quiet: whatever was coalesced is due now
    out += [(now, p) for p in plan.due(now, registered.__contains__)]
    for login in ("alice", "bob"):
        mine = [(at, p) for at, p in out if p.login == login]
        seqs = [p.seq for _, p in mine]
        assert seqs == sorted(set(seqs))
        times = [at for at, _ in mine]
        assert all(b - a >= 3.0 for a, b in itertools.pairwise(times))
        if mine:
            assert mine[-1][1].status is (ONLINE if login in registered else OFFLINE)
        else:
            assert login not in registered

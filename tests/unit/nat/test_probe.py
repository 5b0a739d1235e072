"""The Binding health-check core (nat.stun.probe) in virtual time: schedule, match, give up."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.stun import StunClass, StunMessage, StunMethod, XorMappedAddress, encode_message
from nat.stun.probe import BindingProbe, budget_policy

SERVER = ("192.0.2.1", 3478)
LOCAL = ("0.0.0.0", 40000)
TID = bytes(range(12))


def answer(tid: bytes = TID, cls: StunClass = StunClass.SUCCESS) -> bytes:
    message = StunMessage(StunMethod.BINDING, cls, tid, (XorMappedAddress(("198.51.100.7", 5)),))
    return encode_message(message)


@pytest.mark.parametrize(("budget", "attempts"), [(1.5, 3), (0.7, 1), (3.0, 4)])
def test_budget_policy_fits_the_budget(budget: float, attempts: int) -> None:
    policy = budget_policy(budget, attempts)
    assert len(policy.send_offsets()) == attempts
    assert policy.timeout == pytest.approx(budget)


def test_retransmits_on_schedule_then_gives_up() -> None:
    probe = BindingProbe(SERVER, TID, budget_policy(1.4, 3), now=10.0)  # unit 0.2 s
    sends = list(probe.first())
    now = 10.0
    while (deadline := probe.next_deadline()) is not None:
        now = deadline
        sends.extend(probe.handle_timer(now))
    assert len(sends) == 3 and all(s.remote == SERVER for s in sends)
    assert now == pytest.approx(11.4)
    assert probe.done and probe.rtt is None


def test_answer_sets_rtt_and_ignores_strangers() -> None:
    probe = BindingProbe(SERVER, TID, budget_policy(1.5, 3), now=5.0)
    assert probe.handle_datagram(answer(bytes(12)), SERVER, LOCAL, 5.1) == []  # other tid
    assert probe.handle_datagram(answer(), ("192.0.2.99", 3478), LOCAL, 5.1) == []  # other host
    assert probe.handle_datagram(answer(cls=StunClass.ERROR), SERVER, LOCAL, 5.1) == []
    assert probe.next_deadline() is not None  # still waiting
    probe.handle_datagram(answer(), SERVER, LOCAL, 5.25)
    assert probe.done and probe.rtt == pytest.approx(0.25)
    assert probe.mapped == ("198.51.100.7", 5)
    assert probe.next_deadline() is None and probe.handle_timer(9.0) == []


@given(st.binary(max_size=64))
def test_garbage_raises_only_value_error(data: bytes) -> None:
    probe = BindingProbe(SERVER, TID, budget_policy(1.5, 3), now=0.0)
    with contextlib.suppress(ValueError):
        probe.handle_datagram(data, SERVER, LOCAL, 0.1)
    assert not probe.done

"""Foreign calls to bridged P2P logins: off switch, allow-list, token-bucket rate (virtual time)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.bridge import ForeignCallGate, ForeignCallPolicy


def test_local_callers_are_never_limited() -> None:
    gate = ForeignCallGate(ForeignCallPolicy(enabled=False, per_minute=0.0), "GW.test")
    assert all(gate.admit("gw.test", float(t)) is None for t in range(100))


def test_off_and_allow_list_refuse_with_403() -> None:
    off = ForeignCallGate(ForeignCallPolicy(enabled=False), "gw.test")
    assert off.admit("carrier.example", 0.0) == (403, "Forbidden")
    listed = ForeignCallGate(
        ForeignCallPolicy(allow_domains=frozenset({"carrier.example"})), "gw.test"
    )
    assert listed.admit("Carrier.Example", 0.0) is None
    assert listed.admit("other.example", 0.0) == (403, "Forbidden")


def test_rate_allows_the_burst_then_refills_at_the_configured_pace() -> None:
    gate = ForeignCallGate(ForeignCallPolicy(per_minute=6.0), "gw.test")
    burst = [gate.admit("x.example", 0.0) for _ in range(8)]
    assert burst.count(None) == 6
    assert burst[6:] == [(503, "Service Unavailable")] * 2
    assert gate.admit("x.example", 9.0) == (503, "Service Unavailable")  # 0.9 token
    assert gate.admit("x.example", 10.0) is None  # 10 s at 6/min: one more token


@given(st.lists(st.floats(min_value=0, max_value=600), max_size=200))
def test_never_more_than_burst_plus_refill(times: list[float]) -> None:
    gate = ForeignCallGate(ForeignCallPolicy(per_minute=12.0), "gw.test")
    ordered = sorted(times)
    admitted = sum(gate.admit("x.example", t) is None for t in ordered)
    span = ordered[-1] - ordered[0] if ordered else 0.0
    assert admitted <= 12 + span * 12 / 60 + 1e-9

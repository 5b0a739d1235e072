"""A media path built from the connectivity layer's ICE plan keeps its servers explicit."""

from __future__ import annotations

from p2pnode.connectivity.credentials import TurnCredentials
from p2pnode.connectivity.ice_servers import IcePlan, TurnTransport
from p2pnode.sessions.calls import IceServer, MediaPath


def test_a_plan_with_stun_and_turn_becomes_two_explicit_servers() -> None:
    credentials = TurnCredentials("1700000000:alice", "secret", "p2pnode", 1_700_000_000)
    plan = IcePlan(
        ("203.0.113.5", 3479),
        ("203.0.113.5", 3478),
        TurnTransport.TCP,
        credentials,
        relay_id="relay-peer",
    )
    path = MediaPath.from_plan(plan, relay_only=True)
    assert path.name == "relay-peer"
    assert path.relay_only
    assert path.servers == (
        IceServer("stun:203.0.113.5:3479"),
        IceServer("turn:203.0.113.5:3478?transport=tcp", "1700000000:alice", "secret"),
    )


def test_an_empty_plan_means_host_candidates_only() -> None:
    path = MediaPath.from_plan(IcePlan())
    assert path.servers == ()
    assert path.name == "direct"

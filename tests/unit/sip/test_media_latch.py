"""The relay's latching rules (sans-IO) and the NAT fix of the signalled address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.media import LatchCore, Side, Verdict, is_private, signalled_address


def test_a_side_latches_only_from_the_signalled_ip_and_any_port() -> None:
    core = LatchCore(window=2.0)
    core.expect(Side.A, ("198.51.100.7", 4000))
    core.expect(Side.B, ("203.0.113.9", 5000))
    assert core.receive(Side.A, ("192.0.2.66", 4000), 0.0) is Verdict.WRONG_SOURCE
    # A NAT rewrote the port: still the signalled IP, so it latches.
    assert core.receive(Side.A, ("198.51.100.7", 61000), 0.1) is Verdict.FORWARD
    assert core.destination(Side.A) == ("198.51.100.7", 61000)
    # Packets to B go to its signalled address until B latches.
    assert core.destination(Side.B) == ("203.0.113.9", 5000)


def test_relatching_is_allowed_only_within_the_window() -> None:
    core = LatchCore(window=2.0)
    core.expect(Side.A, ("198.51.100.7", 4000))
    core.expect(Side.B, ("203.0.113.9", 5000))
    assert core.receive(Side.A, ("198.51.100.7", 1111), 10.0) is Verdict.FORWARD
    assert core.receive(Side.A, ("198.51.100.7", 2222), 11.5) is Verdict.FORWARD
    assert core.destination(Side.A) == ("198.51.100.7", 2222)
    # After the window only the latched address passes (no RTP bleed from a port scan).
    assert core.receive(Side.A, ("198.51.100.7", 3333), 12.5) is Verdict.WRONG_SOURCE
    assert core.receive(Side.A, ("198.51.100.7", 2222), 99.0) is Verdict.FORWARD


def test_nothing_is_forwarded_before_signalling_or_to_a_held_side() -> None:
    core = LatchCore()
    assert core.receive(Side.A, ("198.51.100.7", 4000), 0.0) is Verdict.NOT_SIGNALLED
    core.expect(Side.A, ("198.51.100.7", 4000))
    core.expect(Side.B, ("0.0.0.0", 5000))  # RFC 2543 hold
    assert core.receive(Side.A, ("198.51.100.7", 4000), 0.0) is Verdict.NO_DESTINATION
    core.expect(Side.B, ("203.0.113.9", 5000))  # resume
    assert core.receive(Side.A, ("198.51.100.7", 4000), 0.1) is Verdict.FORWARD


def test_a_moved_side_unlatches() -> None:
    core = LatchCore()
    core.expect(Side.A, ("198.51.100.7", 4000))
    core.expect(Side.B, ("203.0.113.9", 5000))
    core.receive(Side.A, ("198.51.100.7", 4000), 0.0)
    core.expect(Side.A, ("198.51.100.8", 4000))  # a re-INVITE moved A's media
    assert core.receive(Side.A, ("198.51.100.7", 4000), 0.1) is Verdict.WRONG_SOURCE
    assert core.receive(Side.A, ("198.51.100.8", 4002), 0.2) is Verdict.FORWARD


def test_private_sdp_addresses_are_replaced_by_the_sip_source() -> None:
    assert is_private("10.1.2.3") and is_private("192.168.1.5") and is_private("100.64.0.1")
    assert not is_private("127.0.0.1") and not is_private("198.51.100.7")
    assert signalled_address("192.168.1.5", 4000, ("198.51.100.7", 5060)) == ("198.51.100.7", 4000)
    assert signalled_address("198.51.100.9", 4000, ("198.51.100.7", 5060)) == ("198.51.100.9", 4000)
    # Both private (a LAN deployment): the SDP's address stands.
    assert signalled_address("10.0.0.5", 4000, ("10.0.0.9", 5060)) == ("10.0.0.5", 4000)


@given(
    st.lists(
        st.tuples(st.sampled_from(["198.51.100.7", "192.0.2.1"]), st.integers(1, 65535)),
        max_size=30,
    )
)
def test_only_the_signalled_ip_ever_becomes_a_destination(sources: list[tuple[str, int]]) -> None:
    core = LatchCore(window=1.0)
    core.expect(Side.A, ("198.51.100.7", 4000))
    core.expect(Side.B, ("203.0.113.9", 5000))
    for index, source in enumerate(sources):
        core.receive(Side.A, source, index * 0.3)
        destination = core.destination(Side.A)
        assert destination is not None and destination[0] == "198.51.100.7"

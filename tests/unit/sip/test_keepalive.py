"""Keep-alive OPTIONS to registered devices in virtual time; silent ones are unregistered."""

from __future__ import annotations

from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.keepalive import NatKeepalive, PingTarget, options_ping
from p2pnode.gateways.sip.parser import parse_datagram, serialize

PHONE = PingTarget(
    "alice", SipUri("sip", "alice", None, "10.0.0.2", 5060), ("203.0.113.7", 40001), False
)
DESK = PingTarget("bob", SipUri("sip", "bob", None, "10.0.0.3", None), ("203.0.113.8", 5060), True)


def test_pings_every_interval_and_a_silent_device_goes_after_two_misses() -> None:
    keepalive = NatKeepalive(interval=25.0, max_missed=2)
    assert keepalive.watch(PHONE, 0.0) and keepalive.watch(DESK, 5.0)
    assert keepalive.next_deadline() == 25.0
    assert keepalive.due(24.9) == []
    assert keepalive.due(25.0) == [PHONE]
    assert keepalive.due(30.0) == [DESK]
    assert keepalive.next_deadline() == 50.0
    keepalive.answered(DESK.key)
    assert not keepalive.missed(PHONE.key)  # one miss is not enough
    assert keepalive.due(55.0) == [PHONE, DESK]
    keepalive.answered(DESK.key)
    assert keepalive.missed(PHONE.key)  # the second in a row: unregister
    assert len(keepalive) == 1
    assert keepalive.due(200.0) == [DESK]


def test_an_answer_resets_the_count_and_a_reregister_reschedules() -> None:
    keepalive = NatKeepalive(interval=25.0, max_missed=2)
    keepalive.watch(PHONE, 0.0)
    keepalive.due(25.0)
    assert not keepalive.missed(PHONE.key)
    keepalive.answered(PHONE.key)
    keepalive.due(50.0)
    assert not keepalive.missed(PHONE.key)
    keepalive.watch(PHONE, 60.0)  # the phone registered again
    assert keepalive.next_deadline() == 85.0
    keepalive.unwatch(PHONE.key)
    assert keepalive.next_deadline() is None and not keepalive.missed(PHONE.key)


def test_bounded() -> None:
    keepalive = NatKeepalive(max_targets=1)
    assert keepalive.watch(PHONE, 0.0)
    assert not keepalive.watch(DESK, 0.0)
    assert keepalive.watch(PHONE, 1.0)  # refreshing a watched one is always allowed


def test_options_ping_targets_the_contact() -> None:
    ping = options_ping(
        PHONE,
        via="SIP/2.0/UDP 198.51.100.1:5060",
        from_uri="sip:gateway@gw.test",
        branch_id="ka1",
        call_id="ka-1",
        tag="g",
    )
    assert ping.method == "OPTIONS" and ping.uri == PHONE.contact
    assert ping.top_via.branch == "z9hG4bKka1" and ping.top_via.has_rport
    assert parse_datagram(serialize(ping)) == ping

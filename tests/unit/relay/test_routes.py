"""The forwarding routes (the runner's ChannelData fast path) in virtual time.

``fast_to_peer`` / ``fast_to_client`` do what ``RelayService`` does per datagram
(look the route up, compare ``now`` with its expiry, ``admit``); "slow" means the
runner would hand the datagram to the core instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from nat.stun import StunClass, StunMessage
from relay.allocation import FiveTuple, Transport
from relay.quota import QuotaConfig
from relay.server import TurnServer
from tests.unit.relay.harness import PEER, Client, Harness, make_server

PEER2 = ("198.51.100.8", 6000)
CHANNEL = 0x4000
PACKET = b"\x40\x00\x00\x03abc"
Verdict = bool | str  # True relayed, False dropped over the cap, "slow" to the core


def fast_to_peer(server: TurnServer, five_tuple: FiveTuple, data: bytes, now: float) -> Verdict:
    number, length = struct.unpack_from("!HH", data)
    route = server.client_routes(five_tuple.server).get((five_tuple.client, number))
    if route is None or not now < route.expiry or len(data) < 4 + length:
        return "slow"
    return route.admit(length, now)


def fast_to_client(
    server: TurnServer, relayed: tuple[str, int], data: bytes, peer: tuple[str, int], now: float
) -> Verdict:
    route = server.peer_routes(relayed).get(peer)
    if route is None or not now < route.expiry:
        return "slow"
    return route.admit(len(data), now)


def bound(harness: Harness, transport: Transport = Transport.UDP) -> Client:
    client = harness.client(transport=transport)
    assert client.allocate().cls is StunClass.SUCCESS
    assert client.bind(CHANNEL, PEER).cls is StunClass.SUCCESS
    return client


def warm(harness: Harness, client: Client) -> tuple[str, int]:
    """One packet each way through the core: builds both routes."""
    assert client.relayed is not None
    now = harness.now
    assert harness.server.channel_data_from_client(client.five_tuple, PACKET, now) is not None
    assert harness.server.from_peer(client.relayed, b"xyz", PEER, now) is not None
    return client.relayed


def test_first_packet_builds_the_routes_and_both_paths_count() -> None:
    harness = Harness(make_server())
    client = bound(harness)
    assert client.relayed is not None
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) == "slow"
    relayed = warm(harness, client)
    assert harness.server.routes_held() == 2
    routes = harness.server.client_routes(client.five_tuple.server)
    route = routes[(client.five_tuple.client, CHANNEL)]
    assert (route.relayed, route.peer) == (relayed, PEER)
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) is True
    assert fast_to_client(harness.server, relayed, b"xyz", PEER, harness.now) is True
    stats = harness.server.statistics()
    assert (stats.packets_to_peer, stats.bytes_to_peer) == (2, 6)
    assert (stats.packets_to_client, stats.bytes_to_client) == (2, 6)


def test_unknown_channel_and_unknown_peer_stay_on_the_slow_path() -> None:
    harness = Harness(make_server())
    client = bound(harness)
    relayed = warm(harness, client)
    other_channel = b"\x40\x01\x00\x03abc"
    assert fast_to_peer(harness.server, client.five_tuple, other_channel, harness.now) == "slow"
    assert (
        harness.server.channel_data_from_client(client.five_tuple, other_channel, harness.now)
        is None
    )
    assert fast_to_client(harness.server, relayed, b"x", PEER2, harness.now) == "slow"
    assert harness.server.from_peer(relayed, b"x", PEER2, harness.now) is None
    # A short datagram on a live route goes to the core, which drops and counts it.
    assert fast_to_peer(harness.server, client.five_tuple, b"\x40\x00\x00\x09x", harness.now) == (
        "slow"
    )


def test_expired_permission_makes_the_route_stale_to_the_instant() -> None:
    harness = Harness(make_server())
    client = bound(harness)  # permission 300 s, channel 600 s, allocation 600 s
    relayed = warm(harness, client)
    harness.now += 299.999
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) is True
    assert fast_to_client(harness.server, relayed, b"x", PEER, harness.now) is True
    harness.now += 0.001  # exactly the permission's expiry: RFC 8656 §9, gone
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) == "slow"
    assert fast_to_client(harness.server, relayed, b"x", PEER, harness.now) == "slow"
    assert harness.server.channel_data_from_client(client.five_tuple, PACKET, harness.now) is None
    assert harness.server.from_peer(relayed, b"x", PEER, harness.now) is None
    assert harness.server.statistics().dropped("no permission") == 2


def test_expired_channel_makes_the_route_stale_and_peer_data_becomes_data_indications() -> None:
    harness = Harness(make_server())
    client = bound(harness)
    client.refresh(3600)
    relayed = warm(harness, client)
    for _ in range(2):  # keep the permission alive past the channel's 600 s
        harness.now += 250
        assert client.permit(PEER).cls is StunClass.SUCCESS
        warm(harness, client)
    harness.now += 100  # 600 s after ChannelBind: the channel expired
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) == "slow"
    assert harness.server.channel_data_from_client(client.five_tuple, PACKET, harness.now) is None
    assert harness.server.statistics().dropped("channel not bound") == 1
    assert fast_to_client(harness.server, relayed, b"x", PEER, harness.now) == "slow"
    back = harness.server.from_peer(relayed, b"x", PEER, harness.now)
    assert back is not None and back[1][0:2] == b"\x00\x17"  # a Data indication
    assert fast_to_client(harness.server, relayed, b"x", PEER, harness.now) == "slow"


def test_requests_that_change_state_forget_the_routes() -> None:
    harness = Harness(make_server())
    client = bound(harness)
    changes: tuple[Callable[[], StunMessage], ...] = (
        lambda: client.permit(PEER2),
        lambda: client.bind(0x4001, PEER2),
        lambda: client.refresh(1200),
    )
    for change in changes:
        warm(harness, client)
        assert harness.server.routes_held() == 2
        assert change().cls is StunClass.SUCCESS
        assert harness.server.routes_held() == 0
    warm(harness, client)
    harness.server.handle_timer(harness.now)  # so does the sweep (live ones come back on use)
    assert harness.server.routes_held() == 0
    warm(harness, client)
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) is True


def test_bandwidth_cap_holds_on_the_fast_path() -> None:
    quota = QuotaConfig(bandwidth_bytes_per_second=1000, burst_seconds=1.0)
    harness = Harness(make_server(quota=quota))
    client = bound(harness)
    packet = b"\x40\x00\x01\x00" + bytes(256)
    now = harness.now
    assert harness.server.channel_data_from_client(client.five_tuple, packet, now) is not None
    fast = [fast_to_peer(harness.server, client.five_tuple, packet, now) for _ in range(9)]
    assert fast == [True, True] + [False] * 7  # one bucket: 1000-byte burst / 256 B, shared
    harness.now += 1.0
    assert fast_to_peer(harness.server, client.five_tuple, packet, harness.now) is True
    stats = harness.server.statistics()
    assert stats.dropped_over_bandwidth == 7 and stats.packets_to_peer == 4
    # Peer -> client has its own bucket, enforced the same way.
    assert client.relayed is not None
    assert harness.server.from_peer(client.relayed, bytes(256), PEER, harness.now) is not None
    back = [
        fast_to_client(harness.server, client.relayed, bytes(256), PEER, harness.now)
        for _ in range(3)
    ]
    assert back == [True, True, False]
    assert fast_to_client(harness.server, client.relayed, bytes(0x10000), PEER, harness.now) is (
        False
    )  # larger than a Data indication can carry: refused like on the slow path


def test_deallocation_removes_the_routes() -> None:
    harness = Harness(make_server())
    client = bound(harness)
    relayed = warm(harness, client)
    assert client.refresh(0).cls is StunClass.SUCCESS
    assert harness.server.routes_held() == 0
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) == "slow"
    assert fast_to_client(harness.server, relayed, b"x", PEER, harness.now) == "slow"


def test_allocation_expiry_removes_the_routes() -> None:
    harness = Harness(make_server())
    client = bound(harness)
    relayed = warm(harness, client)
    harness.now += 350
    assert client.permit(PEER).cls is StunClass.SUCCESS  # permission outlives the allocation
    warm(harness, client)
    harness.now += 249.5
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) is True
    harness.now += 0.5  # the allocation's 600 s are up; no sweep has run yet
    assert fast_to_peer(harness.server, client.five_tuple, PACKET, harness.now) == "slow"
    assert fast_to_client(harness.server, relayed, b"x", PEER, harness.now) == "slow"
    harness.advance(1)
    assert harness.server.statistics().allocations == 0
    assert harness.server.routes_held() == 0


def test_tcp_clients_get_no_routes() -> None:
    harness = Harness(make_server())
    client = bound(harness, transport=Transport.TCP)
    warm(harness, client)
    assert harness.server.routes_held() == 0
    outputs = harness.server.client_closed(client.five_tuple, harness.now)
    assert outputs and harness.server.routes_held() == 0


# (operation, argument): advance seconds, refresh lifetime, CreatePermission, ChannelBind,
# or a packet each way.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 60, 299, 300, 301, 599, 600])),
        st.tuples(st.just("refresh"), st.sampled_from([600, 1200, 3600])),
        st.tuples(st.just("permit"), st.just(0)),
        st.tuples(st.just("bind"), st.just(0)),
        st.tuples(st.just("send"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_fast_path_relays_exactly_when_the_rules_allow(steps: list[tuple[str, float]]) -> None:
    """A model of the three lifetimes: each packet is relayed (by the route or the core)
    iff allocation, channel and permission are all live at that instant."""
    harness = Harness(make_server())
    client = bound(harness)
    assert client.relayed is not None
    allocation_end = harness.now + 600
    channel_end = harness.now + 600
    permission_end = harness.now + 300
    for operation, value in steps:
        now = harness.now
        live_allocation = now < allocation_end
        if operation == "advance":
            harness.advance(value)
        elif not live_allocation:
            break
        elif operation == "refresh":
            assert client.refresh(int(value)).cls is StunClass.SUCCESS
            allocation_end = now + value
        elif operation == "permit":
            assert client.permit(PEER).cls is StunClass.SUCCESS
            permission_end = now + 300
        elif operation == "bind":
            if client.bind(CHANNEL, PEER).cls is StunClass.SUCCESS:
                channel_end = now + 600
                permission_end = now + 300
        else:
            allowed = now < min(allocation_end, channel_end, permission_end)
            verdict = fast_to_peer(harness.server, client.five_tuple, PACKET, now)
            if verdict == "slow":
                relayed = harness.server.channel_data_from_client(client.five_tuple, PACKET, now)
                verdict = relayed is not None
            assert verdict is allowed
            back = fast_to_client(harness.server, client.relayed, b"x", PEER, now)
            if back == "slow":
                forwarded = harness.server.from_peer(client.relayed, b"x", PEER, now)
                back = forwarded is not None and forwarded[1][:2] == b"\x40\x00"
            assert back is allowed


def test_both_ends_on_one_relay_each_direction_obeys_the_receiving_allocation() -> None:
    """What ``RelayService._hairpin`` consults when alice's channel points at bob's relayed
    address on the same server: alice's client route, then bob's peer route keyed by
    alice's relayed address. Bob's permission for alice expiring (alice keeps hers)
    stops the second half to the instant; bob's deallocation stops it too."""
    harness = Harness(make_server(allow=("198.51.100.0/24", "192.0.2.0/24")))
    alice = harness.client(("203.0.113.5", 40000), "alice")
    bob = harness.client(("203.0.113.6", 40000), "bob")
    assert alice.allocate().cls is StunClass.SUCCESS and bob.allocate().cls is StunClass.SUCCESS
    assert alice.relayed is not None and bob.relayed is not None
    assert alice.bind(CHANNEL, bob.relayed).cls is StunClass.SUCCESS
    assert bob.bind(0x4001, alice.relayed).cls is StunClass.SUCCESS
    server = harness.server
    relayed = server.channel_data_from_client(alice.five_tuple, PACKET, harness.now)
    assert relayed == (alice.relayed, bob.relayed, b"abc")  # to our own relayed address
    back = server.from_peer(bob.relayed, b"abc", alice.relayed, harness.now)
    assert back is not None and back[0] == bob.five_tuple
    assert back[1] == b"\x40\x01\x00\x03abc"  # on bob's channel
    route = server.peer_routes(bob.relayed)[alice.relayed]
    assert (route.client, route.number) == (bob.five_tuple.client, 0x4001)
    harness.now += 250
    assert alice.bind(CHANNEL, bob.relayed).cls is StunClass.SUCCESS  # alice refreshes hers
    server.channel_data_from_client(alice.five_tuple, PACKET, harness.now)
    server.from_peer(bob.relayed, b"abc", alice.relayed, harness.now)
    harness.now += 49.999
    assert fast_to_peer(server, alice.five_tuple, PACKET, harness.now) is True
    assert fast_to_client(server, bob.relayed, b"x", alice.relayed, harness.now) is True
    harness.now += 0.001  # bob's permission for alice: 300 s, gone now
    assert fast_to_peer(server, alice.five_tuple, PACKET, harness.now) is True
    assert fast_to_client(server, bob.relayed, b"x", alice.relayed, harness.now) == "slow"
    assert server.from_peer(bob.relayed, b"x", alice.relayed, harness.now) is None
    assert server.statistics().dropped("no permission") == 1
    assert bob.bind(0x4001, alice.relayed).cls is StunClass.SUCCESS  # bob permits again
    assert server.from_peer(bob.relayed, b"x", alice.relayed, harness.now) is not None
    assert bob.refresh(0).cls is StunClass.SUCCESS  # bob hangs up: his allocation goes
    assert fast_to_client(server, bob.relayed, b"x", alice.relayed, harness.now) == "slow"
    assert server.from_peer(bob.relayed, b"x", alice.relayed, harness.now) is None
    assert server.statistics().dropped("peer data without allocation") == 1

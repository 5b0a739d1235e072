"""The sans-IO TURN core in virtual time: every method, every error, lifetimes, quotas."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.stun import (
    AdditionalAddressFamily,
    AddressFamily,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    StunClass,
    StunMessage,
    StunMethod,
    UnknownAttribute,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    check_integrity,
    decode_message,
    encode_message,
)
from relay.allocation import FiveTuple, Transport
from relay.auth import long_term_key, rest_api_credentials, rest_api_password, rest_api_username
from relay.messages import CloseRelay, ToClient
from relay.policy import PeerAddressPolicy, parse_networks
from relay.quota import QuotaConfig
from relay.server import TurnConfig, TurnServer
from tests.unit.relay.harness import (
    PEER,
    REALM,
    RELAY_IP,
    SERVER,
    Client,
    Harness,
    error_code,
    make_server,
)

PEER2 = ("198.51.100.8", 6000)


@pytest.fixture
def harness() -> Harness:
    return Harness(make_server())


def allocated(harness: Harness, **kwargs: object) -> Client:
    client = harness.client(**kwargs)  # type: ignore[arg-type]
    response = client.allocate()
    assert response.cls is StunClass.SUCCESS, response
    return client


# ------------------------------------------------------------------ Binding


def test_binding_answers_without_auth(harness: Harness) -> None:
    client = harness.client()
    response = client.request(StunMethod.BINDING, [], authenticated=False)
    assert response.cls is StunClass.SUCCESS
    mapped = response.get(XorMappedAddress)
    assert mapped is not None and mapped.address == client.five_tuple.client


def test_binding_with_unknown_comprehension_required_gets_420(harness: Harness) -> None:
    client = harness.client()
    response = client.request(
        StunMethod.BINDING, [UnknownAttribute(0x7777, b"1234")], authenticated=False
    )
    assert error_code(response) == 420
    unknown = response.get(UnknownAttributes)
    assert unknown is not None and unknown.types == (0x7777,)


# ------------------------------------------------------------ authentication


def test_allocate_without_credentials_is_challenged(harness: Harness) -> None:
    client = harness.client()
    response = client.request(StunMethod.ALLOCATE, [RequestedTransport(17)], authenticated=False)
    assert error_code(response) == 401
    realm = response.get(Realm)
    assert realm is not None and realm.value == REALM
    assert response.get(Nonce) is not None
    assert response.get(MessageIntegrity) is None


def test_integrity_without_username_is_400(harness: Harness) -> None:
    client = harness.client()
    tid = client.tid()
    request = StunMessage(StunMethod.ALLOCATE, StunClass.REQUEST, tid, (RequestedTransport(17),))
    data = encode_message(request, integrity_key=b"k" * 16)
    [reply] = harness.send(client, data)
    assert error_code(decode_message(reply.data)) == 400


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("mallory", "pw")])
def test_bad_credentials_are_401(harness: Harness, username: str, password: str) -> None:
    client = harness.client(username=username, password=password)
    assert error_code(client.allocate()) == 401
    assert harness.server.statistics().allocations == 0


def test_wrong_realm_is_401(harness: Harness) -> None:
    client = harness.client()
    client.allocate()  # learn a nonce
    tid = client.tid()
    attributes = (
        RequestedTransport(17),
        Username("alice"),
        Realm("other"),
        Nonce(client.nonce or ""),
    )
    request = StunMessage(StunMethod.REFRESH, StunClass.REQUEST, tid, attributes)
    key = long_term_key("alice", "other", "alice-pw")
    [reply] = harness.send(client, encode_message(request, integrity_key=key))
    assert error_code(decode_message(reply.data)) == 401


def test_success_carries_integrity_with_the_long_term_key(harness: Harness) -> None:
    client = harness.client()
    tid = client.tid()
    response = client.request(StunMethod.ALLOCATE, [RequestedTransport(17)], transaction_id=tid)
    assert response.cls is StunClass.SUCCESS
    raw = encode_message(
        StunMessage(response.method, response.cls, tid, response.attributes[:-1]),
        integrity_key=long_term_key("alice", REALM, "alice-pw"),
    )
    assert check_integrity(raw, long_term_key("alice", REALM, "alice-pw"))


def test_sha256_integrity_is_answered_in_kind(harness: Harness) -> None:
    client = harness.client()
    response = client.request(StunMethod.ALLOCATE, [RequestedTransport(17)], sha256=True)
    assert response.cls is StunClass.SUCCESS
    assert response.get(MessageIntegritySha256) is not None
    assert response.get(MessageIntegrity) is None


def test_stale_nonce_is_438_then_retry_works(harness: Harness) -> None:
    client = allocated(harness)
    harness.now += 601  # nonce lifetime 600 s; the allocation (600 s) is refreshed first
    old_nonce = client.nonce
    tid = client.tid()
    attributes = (Lifetime(600), Username("alice"), Realm(REALM), Nonce(old_nonce or ""))
    request = StunMessage(StunMethod.REFRESH, StunClass.REQUEST, tid, attributes)
    data = encode_message(request, integrity_key=long_term_key("alice", REALM, "alice-pw"))
    [reply] = harness.send(client, data)
    stale = decode_message(reply.data)
    assert error_code(stale) == 438
    new_nonce = stale.get(Nonce)
    assert new_nonce is not None and new_nonce.value != old_nonce
    assert harness.server.statistics().refused(438) == 1


def test_forged_nonce_is_438(harness: Harness) -> None:
    client = harness.client()
    client.nonce = "1234-deadbeef"
    response = client.request(StunMethod.ALLOCATE, [RequestedTransport(17)])
    # The helper retries once with the fresh nonce from the 438 and succeeds.
    assert response.cls is StunClass.SUCCESS
    assert harness.server.statistics().refused(438) == 1


def test_other_user_on_same_five_tuple_is_441(harness: Harness) -> None:
    alice = allocated(harness)
    bob = Client(harness, alice.five_tuple, "bob", "bob-pw")
    assert error_code(bob.refresh()) == 441


def test_rest_api_credentials_through_the_core() -> None:
    wall = [1_000_000.0]
    config = TurnConfig(
        realm=REALM,
        credentials=rest_api_credentials(b"secret", clock=lambda: wall[0]),
        relay_ip=RELAY_IP,
        port_range=(50000, 50010),
    )
    harness = Harness(TurnServer(config, random.Random(1), 1000.0))
    username = rest_api_username(1_000_100, "peer-7")
    client = harness.client(username=username, password=rest_api_password(b"secret", username))
    assert client.allocate().cls is StunClass.SUCCESS
    wall[0] = 1_000_101.0
    assert error_code(client.refresh()) == 401  # expired credentials


def test_rest_api_expiry_is_checked_against_the_adapters_wall_time() -> None:
    """No clock inside the core: the lookup records the expiry, the core compares it with
    the wall time passed in; the monotonic ``now`` (here far from unix time) never does."""
    config = TurnConfig(
        realm=REALM,
        credentials=rest_api_credentials(b"secret"),
        relay_ip=RELAY_IP,
        port_range=(50000, 50010),
    )
    harness = Harness(TurnServer(config, random.Random(1), 1000.0), wall=1_000_000.0)
    username = rest_api_username(1_000_100, "peer-7")
    client = harness.client(username=username, password=rest_api_password(b"secret", username))
    assert client.allocate().cls is StunClass.SUCCESS
    harness.wall = 1_000_100.0
    assert client.refresh().cls is StunClass.SUCCESS  # still valid at its last second
    harness.wall = 1_000_101.0
    assert error_code(client.refresh()) == 401  # expired by wall time
    harness.wall = None
    assert error_code(client.refresh()) == 401  # no wall time given: refused, never accepted


# ------------------------------------------------------------------ Allocate


def test_allocate_success(harness: Harness) -> None:
    client = harness.client()
    response = client.allocate()
    relayed = response.get(XorRelayedAddress)
    lifetime = response.get(Lifetime)
    mapped = response.get(XorMappedAddress)
    assert relayed is not None and relayed.address[0] == RELAY_IP
    assert 50000 <= relayed.address[1] <= 50099
    assert lifetime is not None and lifetime.value == 600
    assert mapped is not None and mapped.address == client.five_tuple.client
    assert relayed.address in harness.open_relays
    stats = harness.server.statistics()
    assert stats.allocations == 1 and stats.allocations_created == 1


def test_retransmitted_allocate_gets_the_same_answer(harness: Harness) -> None:
    client = harness.client()
    tid = client.tid()
    first = client.request(StunMethod.ALLOCATE, [RequestedTransport(17)], transaction_id=tid)
    again = client.request(StunMethod.ALLOCATE, [RequestedTransport(17)], transaction_id=tid)
    assert first == again
    assert harness.server.statistics().allocations_created == 1


def test_second_allocate_is_437(harness: Harness) -> None:
    client = allocated(harness)
    assert error_code(client.allocate()) == 437


@pytest.mark.parametrize(
    ("attributes", "code"),
    [
        ([], 400),
        ([RequestedTransport(6)], 442),
        ([RequestedTransport(17), DontFragment()], 420),
        ([RequestedTransport(17), UnknownAttribute(0x7F00, b"")], 420),
        ([RequestedTransport(17), ReservationToken(b"12345678")], 508),
        ([RequestedTransport(17), ReservationToken(b"12345678"), EvenPort()], 400),
        ([RequestedTransport(17), EvenPort(reserve=True)], 508),
        ([RequestedTransport(17), RequestedAddressFamily(AddressFamily.IPV6)], 440),
        (
            [
                RequestedTransport(17),
                RequestedAddressFamily(AddressFamily.IPV4),
                AdditionalAddressFamily(AddressFamily.IPV6),
            ],
            400,
        ),
        ([RequestedTransport(17), AdditionalAddressFamily(AddressFamily.IPV4)], 400),
    ],
    ids=[
        "no-transport",
        "tcp",
        "dont-fragment",
        "unknown-attribute",
        "reservation-token",
        "token-with-even-port",
        "even-port-reserve",
        "ipv6",
        "both-families",
        "additional-ipv4",
    ],
)
def test_allocate_errors(harness: Harness, attributes: list[object], code: int) -> None:
    client = harness.client()
    response = client.request(StunMethod.ALLOCATE, attributes)  # type: ignore[arg-type]
    assert error_code(response) == code
    assert response.get(MessageIntegrity) is not None  # authenticated errors are signed
    assert harness.server.statistics().allocations == 0
    if code == 420:
        unknown = response.get(UnknownAttributes)
        assert unknown is not None and unknown.types


def test_dont_fragment_is_listed_as_unknown(harness: Harness) -> None:
    response = harness.client().request(
        StunMethod.ALLOCATE, [RequestedTransport(17), DontFragment()]
    )
    unknown = response.get(UnknownAttributes)
    assert unknown is not None and unknown.types == (0x001A,)


def test_even_port_gives_an_even_port(harness: Harness) -> None:
    for index in range(5):
        client = harness.client(address=("203.0.113.5", 41000 + index))
        response = client.allocate(EvenPort())
        relayed = response.get(XorRelayedAddress)
        assert relayed is not None and relayed.address[1] % 2 == 0


def test_additional_ipv6_is_refused_politely(harness: Harness) -> None:
    response = harness.client().allocate(AdditionalAddressFamily(AddressFamily.IPV6))
    assert response.cls is StunClass.SUCCESS


@pytest.mark.parametrize(("asked", "granted"), [(30, 600), (1200, 1200), (100000, 3600)])
def test_lifetime_is_clamped(harness: Harness, asked: int, granted: int) -> None:
    response = harness.client().allocate(Lifetime(asked))
    lifetime = response.get(Lifetime)
    assert lifetime is not None and lifetime.value == granted


def test_busy_ports_are_retried() -> None:
    harness = Harness(make_server(port_range=(50000, 50003)), busy_ports={50000, 50001, 50002})
    response = harness.client().allocate()
    relayed = response.get(XorRelayedAddress)
    assert relayed is not None and relayed.address[1] == 50003


def test_all_ports_busy_is_508() -> None:
    harness = Harness(make_server(port_range=(50000, 50003)), busy_ports=set(range(50000, 50004)))
    assert error_code(harness.client().allocate()) == 508
    assert harness.server.statistics().allocations == 0


# ------------------------------------------------------------------- quotas


def test_per_identity_quota_is_486() -> None:
    harness = Harness(make_server(quota=QuotaConfig(max_allocations_per_identity=2)))
    for index in range(2):
        allocated(harness, address=(f"203.0.113.{index + 1}", 4000))
    assert error_code(harness.client(address=("203.0.113.9", 4000)).allocate()) == 486
    # Another identity is unaffected.
    bob = harness.client(address=("203.0.113.9", 4000), username="bob")
    assert bob.allocate().cls is StunClass.SUCCESS


def test_per_source_ip_quota_is_486() -> None:
    quota = QuotaConfig(max_allocations_per_source_ip=2)
    harness = Harness(make_server(quota=quota))
    allocated(harness, address=("203.0.113.5", 1))
    allocated(harness, address=("203.0.113.5", 2), username="bob")
    assert error_code(harness.client(address=("203.0.113.5", 3)).allocate()) == 486
    assert harness.server.statistics().refused(486) == 1


def test_total_capacity_is_508_and_released_on_delete() -> None:
    harness = Harness(make_server(quota=QuotaConfig(max_allocations=2)))
    first = allocated(harness, address=("203.0.113.1", 1))
    allocated(harness, address=("203.0.113.2", 1))
    third = harness.client(address=("203.0.113.3", 1))
    assert error_code(third.allocate()) == 508
    assert first.refresh(0).cls is StunClass.SUCCESS
    assert third.allocate().cls is StunClass.SUCCESS


def test_port_exhaustion_is_508() -> None:
    harness = Harness(make_server(port_range=(50000, 50001)))
    allocated(harness, address=("203.0.113.1", 1))
    allocated(harness, address=("203.0.113.2", 1))
    assert error_code(harness.client(address=("203.0.113.3", 1)).allocate()) == 508


# ------------------------------------------------------------------- Refresh


def test_refresh_extends_and_zero_deletes(harness: Harness) -> None:
    client = allocated(harness)
    response = client.refresh(1800)
    lifetime = response.get(Lifetime)
    assert lifetime is not None and lifetime.value == 1800
    harness.advance(1000)  # beyond the original 600 s
    assert harness.server.statistics().allocations == 1
    response = client.refresh(0)
    lifetime = response.get(Lifetime)
    assert response.cls is StunClass.SUCCESS and lifetime is not None and lifetime.value == 0
    assert client.relayed not in harness.open_relays
    assert harness.server.statistics().allocations == 0
    assert error_code(client.refresh(0)) == 437


def test_refresh_without_allocation_is_437(harness: Harness) -> None:
    assert error_code(harness.client().refresh()) == 437


def test_refresh_with_other_family_is_443(harness: Harness) -> None:
    client = allocated(harness)
    response = client.request(StunMethod.REFRESH, [RequestedAddressFamily(AddressFamily.IPV6)])
    assert error_code(response) == 443


# ---------------------------------------------------------- CreatePermission


def test_create_permission_errors(harness: Harness) -> None:
    assert error_code(harness.client().permit(PEER)) == 437
    client = allocated(harness)
    assert error_code(client.request(StunMethod.CREATE_PERMISSION, [])) == 400
    assert error_code(client.permit(("10.0.0.1", 1))) == 403
    assert error_code(client.permit(("127.0.0.1", 1))) == 403
    assert error_code(client.permit(("2001:db8::1", 1))) == 443
    # All or nothing: one forbidden peer, no permission for the good one either.
    assert error_code(client.permit(PEER, ("192.168.0.1", 1))) == 403
    assert harness.server.statistics().permissions == 0
    assert client.permit(PEER, PEER2).cls is StunClass.SUCCESS
    assert harness.server.statistics().permissions == 2


def test_permissions_are_bounded() -> None:
    harness = Harness(make_server(quota=QuotaConfig(max_permissions_per_allocation=3)))
    client = allocated(harness)
    peers = [(f"198.51.100.{n}", 1) for n in range(1, 5)]
    assert client.permit(*peers[:3]).cls is StunClass.SUCCESS
    assert error_code(client.permit(peers[3])) == 508
    assert client.permit(peers[0]).cls is StunClass.SUCCESS  # refreshing is fine
    harness.advance(301)
    assert client.permit(peers[3]).cls is StunClass.SUCCESS  # expired ones make room


# --------------------------------------------------------------- ChannelBind


def test_channel_bind_errors(harness: Harness) -> None:
    assert error_code(harness.client().bind(0x4000, PEER)) == 437
    client = allocated(harness)
    assert error_code(client.request(StunMethod.CHANNEL_BIND, [ChannelNumber(0x4000)])) == 400
    assert error_code(client.request(StunMethod.CHANNEL_BIND, [XorPeerAddress(PEER)])) == 400
    assert error_code(client.bind(0x3FFF, PEER)) == 400
    assert error_code(client.bind(0x5000, PEER)) == 400
    assert error_code(client.bind(0x4000, ("10.0.0.1", 1))) == 403
    assert error_code(client.bind(0x4000, ("2001:db8::1", 1))) == 443
    assert client.bind(0x4000, PEER).cls is StunClass.SUCCESS
    assert client.bind(0x4000, PEER).cls is StunClass.SUCCESS  # refresh
    assert error_code(client.bind(0x4000, PEER2)) == 400  # number bound elsewhere
    assert error_code(client.bind(0x4001, PEER)) == 400  # peer bound elsewhere
    stats = harness.server.statistics()
    assert stats.channels == 1 and stats.permissions == 1  # ChannelBind installs a permission


def test_legacy_channel_numbers_are_optional() -> None:
    config = TurnConfig(
        realm=REALM,
        credentials=make_server()._config.credentials,
        relay_ip=RELAY_IP,
        policy=PeerAddressPolicy(allow=parse_networks(["198.51.100.0/24"])),
        port_range=(50000, 50010),
        legacy_channels=True,
    )
    harness = Harness(TurnServer(config, random.Random(1), 1000.0))
    client = allocated(harness)
    assert client.bind(0x5DF8, PEER).cls is StunClass.SUCCESS
    assert error_code(client.bind(0x8000, PEER2)) == 400
    relayed = harness.server.channel_data_from_client(
        client.five_tuple, b"\x5d\xf8\x00\x02hi", harness.now
    )
    assert relayed is not None and relayed[2] == b"hi"


def test_channels_are_bounded() -> None:
    harness = Harness(make_server(quota=QuotaConfig(max_channels_per_allocation=2)))
    client = allocated(harness)
    assert client.bind(0x4000, ("198.51.100.1", 1)).cls is StunClass.SUCCESS
    assert client.bind(0x4001, ("198.51.100.2", 1)).cls is StunClass.SUCCESS
    assert error_code(client.bind(0x4002, ("198.51.100.3", 1))) == 508


def test_channel_cooldown_after_expiry(harness: Harness) -> None:
    client = allocated(harness)
    client.refresh(3600)
    assert client.bind(0x4000, PEER).cls is StunClass.SUCCESS
    harness.advance(601)  # the binding expired ...
    assert (
        harness.server.channel_data_from_client(
            client.five_tuple, b"\x40\x00\x00\x01x", harness.now
        )
        is None
    )
    assert error_code(client.bind(0x4000, PEER2)) == 400  # ... but cools down for 5 min
    assert client.bind(0x4000, PEER).cls is StunClass.SUCCESS  # the same pair may rebind
    harness.advance(601 + 301)
    assert client.bind(0x4000, PEER2).cls is StunClass.SUCCESS  # fully released now


# -------------------------------------------------------------- data paths


def test_channel_data_both_ways(harness: Harness) -> None:
    client = allocated(harness)
    client.bind(0x4000, PEER)
    assert client.relayed is not None
    sent = harness.server.channel_data_from_client(
        client.five_tuple, b"\x40\x00\x00\x03abc\x00", harness.now
    )
    assert sent == (client.relayed, PEER, b"abc")
    back = harness.server.from_peer(client.relayed, b"xyz", PEER, harness.now)
    assert back == (client.five_tuple, b"\x40\x00\x00\x03xyz")
    stats = harness.server.statistics()
    assert (stats.packets_to_peer, stats.bytes_to_peer) == (1, 3)
    assert (stats.packets_to_client, stats.bytes_to_client) == (1, 3)


def test_channel_data_through_handle_client(harness: Harness) -> None:
    client = allocated(harness)
    client.bind(0x4000, PEER)
    harness.send(client, b"\x40\x00\x00\x02hi")
    assert [(p.peer, p.data) for p in harness.to_peers] == [(PEER, b"hi")]


def test_channel_data_over_tcp_is_padded(harness: Harness) -> None:
    client = allocated(harness, transport=Transport.TCP)
    client.bind(0x4000, PEER)
    assert client.relayed is not None
    back = harness.server.from_peer(client.relayed, b"xyzab", PEER, harness.now)
    assert back == (client.five_tuple, b"\x40\x00\x00\x05xyzab\x00\x00\x00")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x40\x01\x00\x01x", "channel not bound"),
        (b"\x40\x00\x00\x09x", "malformed channel data"),
        (b"\x40\x00", "malformed channel data"),
    ],
)
def test_bad_channel_data_is_dropped(harness: Harness, data: bytes, reason: str) -> None:
    client = allocated(harness)
    client.bind(0x4000, PEER)
    assert harness.server.channel_data_from_client(client.five_tuple, data, harness.now) is None
    assert harness.server.statistics().dropped(reason) == 1


def test_channel_data_without_allocation_is_dropped(harness: Harness) -> None:
    stray = FiveTuple(Transport.UDP, ("203.0.113.99", 1), SERVER)
    assert harness.server.handle_client(stray, b"\x40\x00\x00\x00", harness.now) == []
    assert harness.server.statistics().dropped("channel data without allocation") == 1


def send_indication(client: Client, peer: tuple[str, int], payload: bytes) -> bytes:
    message = StunMessage(
        StunMethod.SEND, StunClass.INDICATION, client.tid(), (XorPeerAddress(peer), Data(payload))
    )
    return encode_message(message)


def test_send_indication_needs_a_permission(harness: Harness) -> None:
    client = allocated(harness)
    assert harness.send(client, send_indication(client, PEER, b"early")) == []
    assert harness.to_peers == []
    client.permit(PEER)
    harness.send(client, send_indication(client, PEER, b"hello"))
    assert [(p.relayed, p.peer, p.data) for p in harness.to_peers] == [
        (client.relayed, PEER, b"hello")
    ]
    stats = harness.server.statistics()
    assert stats.dropped("no permission") == 1


def test_send_indication_malformed_or_df_is_dropped(harness: Harness) -> None:
    client = allocated(harness)
    client.permit(PEER)
    no_data = StunMessage(
        StunMethod.SEND, StunClass.INDICATION, client.tid(), (XorPeerAddress(PEER),)
    )
    harness.send(client, encode_message(no_data))
    with_df = StunMessage(
        StunMethod.SEND,
        StunClass.INDICATION,
        client.tid(),
        (XorPeerAddress(PEER), Data(b"x"), DontFragment()),
    )
    harness.send(client, encode_message(with_df))
    assert harness.to_peers == []
    stats = harness.server.statistics()
    assert stats.dropped("malformed send indication") == 1
    assert stats.dropped("send indication asks for DF") == 1


def test_peer_data_without_channel_is_a_data_indication(harness: Harness) -> None:
    client = allocated(harness)
    client.permit(PEER)
    assert client.relayed is not None
    back = harness.server.from_peer(client.relayed, b"payload", PEER, harness.now)
    assert back is not None and back[0] == client.five_tuple
    indication = decode_message(back[1])
    assert (indication.method, indication.cls) == (StunMethod.DATA, StunClass.INDICATION)
    peer = indication.get(XorPeerAddress)
    data = indication.get(Data)
    assert peer is not None and peer.address == PEER
    assert data is not None and data.value == b"payload"


def test_peer_data_without_permission_is_dropped(harness: Harness) -> None:
    client = allocated(harness)
    client.permit(PEER)
    assert client.relayed is not None
    assert harness.server.from_peer(client.relayed, b"x", PEER2, harness.now) is None
    assert harness.server.from_peer(("192.0.2.1", 1), b"x", PEER, harness.now) is None
    stats = harness.server.statistics()
    assert stats.dropped("no permission") == 1
    assert stats.dropped("peer data without allocation") == 1


# ------------------------------------------------------------------ expiry


def test_permission_expires_after_300_seconds(harness: Harness) -> None:
    client = allocated(harness)
    client.bind(0x4000, PEER)
    assert client.relayed is not None
    harness.advance(299)
    assert harness.server.from_peer(client.relayed, b"x", PEER, harness.now) is not None
    harness.advance(2)
    # The channel (600 s) is still bound, but the permission (300 s) is gone.
    assert harness.server.from_peer(client.relayed, b"x", PEER, harness.now) is None
    assert (
        harness.server.channel_data_from_client(
            client.five_tuple, b"\x40\x00\x00\x01x", harness.now
        )
        is None
    )
    client.permit(PEER)
    assert harness.server.from_peer(client.relayed, b"x", PEER, harness.now) is not None


def test_allocation_expires_and_its_socket_closes(harness: Harness) -> None:
    client = allocated(harness)
    assert client.relayed in harness.open_relays
    deadline = harness.server.next_deadline()
    assert deadline is not None and deadline <= harness.now + 600
    outputs = harness.advance(599)
    assert not any(isinstance(o, CloseRelay) for o in outputs)
    outputs = harness.advance(2)
    assert CloseRelay(client.relayed) in outputs
    assert client.relayed not in harness.open_relays
    assert harness.server.statistics().allocations == 0
    assert harness.server.next_deadline() is None
    assert error_code(client.refresh()) == 437


def test_sweep_forgets_expired_state(harness: Harness) -> None:
    client = allocated(harness)
    client.refresh(3600)
    client.bind(0x4000, PEER)
    client.permit(PEER2)
    for _ in range(20):
        harness.advance(60)
    stats = harness.server.statistics()
    assert stats.permissions == 0 and stats.channels == 0 and stats.allocations == 1


def test_tcp_close_deletes_the_allocation(harness: Harness) -> None:
    client = allocated(harness, transport=Transport.TCP)
    outputs = harness.server.client_closed(client.five_tuple, harness.now)
    assert outputs == [CloseRelay(client.relayed)]  # type: ignore[arg-type]
    assert harness.server.statistics().allocations == 0


# --------------------------------------------------------------- bandwidth


def test_bandwidth_cap_drops_excess_and_counts() -> None:
    quota = QuotaConfig(bandwidth_bytes_per_second=1000, burst_seconds=1.0)
    harness = Harness(make_server(quota=quota))
    client = allocated(harness)
    client.bind(0x4000, PEER)
    packet = b"\x40\x00\x01\x00" + bytes(256)
    sent = [
        harness.server.channel_data_from_client(client.five_tuple, packet, harness.now)
        for _ in range(10)
    ]
    assert sum(s is not None for s in sent) == 3  # 1000-byte burst / 256-byte packets
    harness.now += 1.0
    assert harness.server.channel_data_from_client(client.five_tuple, packet, harness.now)
    assert harness.server.statistics().dropped_over_bandwidth == 7


# ---------------------------------------------------------------- bad input


def test_malformed_stun_is_dropped_and_counted(harness: Harness) -> None:
    client = harness.client()
    assert harness.send(client, b"\x00\x01\x00\x00garbage") == []
    assert harness.send(client, b"\xff" * 30) == []
    assert harness.server.statistics().dropped("malformed stun") == 2


def test_malformed_attribute_in_a_request_is_400(harness: Harness) -> None:
    client = harness.client()
    good = encode_message(
        StunMessage(StunMethod.ALLOCATE, StunClass.REQUEST, b"t" * 12, (Lifetime(5),))
    )
    bad = good[:20] + b"\x00\x0d\x00\x02\x00\x05\x00\x00"  # LIFETIME with 2 bytes
    bad = bad[:2] + (len(bad) - 20).to_bytes(2, "big") + bad[4:]
    [reply] = harness.send(client, bad)
    assert error_code(decode_message(reply.data)) == 400


def test_responses_and_unexpected_classes_are_dropped(harness: Harness) -> None:
    client = harness.client()
    response = StunMessage(StunMethod.BINDING, StunClass.SUCCESS, b"t" * 12, ())
    assert harness.send(client, encode_message(response)) == []
    data_request = StunMessage(StunMethod.DATA, StunClass.REQUEST, b"t" * 12, ())
    [reply] = harness.send(client, encode_message(data_request))
    assert error_code(decode_message(reply.data)) == 400


@given(st.binary(max_size=120))
def test_core_is_total_on_any_input(data: bytes) -> None:
    server = make_server()
    five_tuple = FiveTuple(Transport.UDP, ("203.0.113.5", 1), SERVER)
    for output in server.handle_client(five_tuple, data, 1000.0):
        assert isinstance(output, ToClient)
    assert server.from_peer(("192.0.2.1", 50000), data, PEER, 1000.0) is None


@given(
    st.lists(st.sampled_from(["allocate", "refresh0", "permit", "bind", "advance"]), max_size=12)
)
def test_random_walk_keeps_books_balanced(steps: list[str]) -> None:
    """Whatever a client does, live allocations equal open sockets and the counters agree."""
    harness = Harness(make_server(quota=QuotaConfig(max_allocations_per_identity=3)))
    clients = [harness.client(address=("203.0.113.5", port)) for port in (1, 2)]
    for index, step in enumerate(steps):
        client = clients[index % 2]
        if step == "allocate":
            client.allocate()
        elif step == "refresh0":
            client.refresh(0)
        elif step == "permit":
            client.permit(PEER)
        elif step == "bind":
            client.bind(0x4000, PEER)
        else:
            harness.advance(250)
    assert len(harness.open_relays) == harness.server.statistics().allocations

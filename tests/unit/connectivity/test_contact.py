"""CONTACT and PRESENCE payloads, the home protocol's codec, and watch bounds."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.connectivity.contact import (
    MAX_HOMES,
    MAX_NOTE_BYTES,
    Capability,
    Contact,
    ContactDecodeError,
    HomeEntry,
    NatVerdict,
    Presence,
    PresenceStatus,
    decode_contact,
    decode_presence,
    encode_contact,
    encode_presence,
)
from p2pnode.connectivity.homewire import (
    MAX_ALLOW,
    Attach,
    Attached,
    Challenge,
    Code,
    Deliver,
    DeliverAck,
    Detach,
    Hello,
    HomeMessage,
    HomeWireDecodeError,
    Keepalive,
    KeepaliveAck,
    Notify,
    Send,
    SendResult,
    SetAck,
    SetState,
    Watch,
    Watched,
    decode_message,
    encode_message,
)
from p2pnode.connectivity.watch import WatchOutcome, WatchTable
from p2pnode.records import MAX_RECORD_BYTES

K1, K2 = b"\x01" * 32, b"\x02" * 32
HOME = HomeEntry(K1, ("198.51.100.7", 4000), ("198.51.100.7", 4001))
HOME6 = HomeEntry(K2, ("2001:db8::1", 4000), ("2001:db8::1", 65535))

CONTACTS = [
    Contact(()),
    Contact((HOME,), NatVerdict.PUBLIC, b"", Capability.CHAT),
    Contact(
        (HOME, HOME6),
        NatVerdict.SYMMETRIC,
        b"d" * 16,
        Capability.CHAT | Capability.AUDIO | Capability.VIDEO | Capability.SIP,
        1,
    ),
]
PRESENCES = [
    Presence(PresenceStatus.ONLINE),
    Presence(PresenceStatus.AWAY, "lunch", 1_800_000_000),
    Presence(PresenceStatus.BUSY, "é" * (MAX_NOTE_BYTES // 2), 2**40),
    Presence(PresenceStatus.OFFLINE),
]


@pytest.mark.parametrize("contact", CONTACTS)
def test_contact_round_trip_whole_byte_by_byte_and_trailing(contact: Contact) -> None:
    data = encode_contact(contact)
    assert decode_contact(data) == contact
    for cut in range(len(data)):
        with pytest.raises(ContactDecodeError):
            decode_contact(data[:cut])
    with pytest.raises(ContactDecodeError):
        decode_contact(data + b"\0")


@pytest.mark.parametrize("presence", PRESENCES)
def test_presence_round_trip_whole_byte_by_byte_and_trailing(presence: Presence) -> None:
    data = encode_presence(presence)
    assert decode_presence(data) == presence
    for cut in range(len(data)):
        with pytest.raises(ContactDecodeError):
            decode_presence(data[:cut])
    with pytest.raises(ContactDecodeError):
        decode_presence(data + b"\0")


def test_largest_contact_fits_a_record() -> None:
    wide = "2001:db8:ffff:ffff:ffff:ffff:ffff:"
    homes = tuple(
        HomeEntry(bytes([i]) * 32, (f"{wide}ff{i:02x}", 65535), (f"{wide}fe{i:02x}", 65535))
        for i in range(MAX_HOMES)
    )
    contact = Contact(homes, NatVerdict.UDP_BLOCKED, b"d" * 16, Capability(15), 255)
    data = encode_contact(contact)
    assert decode_contact(data) == contact
    assert len(data) < MAX_RECORD_BYTES - 300


def _pack(fields: object) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


H = [K1, ["198.51.100.7", 4000], ["198.51.100.7", 4001]]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([2, [], 0, b"", 1, 1], "version"),
        ([1, [], 0, b"", 1], "6 fields"),
        ([1, [H] * (MAX_HOMES + 1), 0, b"", 1, 1], "msgpack|homes"),
        ([1, [H, H], 0, b"", 1, 1], "twice"),
        ([1, [[b"k", H[1], H[2]]], 0, b"", 1, 1], "home key"),
        ([1, [[K1, ["10.0.0.01", 1], H[2]]], 0, b"", 1, 1], "address"),
        ([1, [[K1, ["::FFFF:1.2.3.4", 1], H[2]]], 0, b"", 1, 1], "canonical"),
        ([1, [[K1, ["10.0.0.1", 0], H[2]]], 0, b"", 1, 1], "port"),
        ([1, [[K1, ["10.0.0.1", 1]]], 0, b"", 1, 1], "home is not"),
        ([1, [], 9, b"", 1, 1], "NAT verdict"),
        ([1, [], 0, b"x" * 17, 1, 1], "device|msgpack"),
        ([1, [], 0, b"", 16, 1], "capabilities"),
        ([1, [], 0, b"", 1, 256], "protocol"),
        ([1, [], 0, "dev", 1, 1], "device"),
    ],
)
def test_contact_table(fields: object, reason: str) -> None:
    with pytest.raises(ContactDecodeError, match=reason):
        decode_contact(_pack(fields))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([2, 1, "", 0], "version"),
        ([1, 7, "", 0], "status"),
        ([1, 1, "x" * (MAX_NOTE_BYTES + 1), 0], "msgpack|note"),
        ([1, 1, "é" * (MAX_NOTE_BYTES // 2 + 1), 0], "msgpack|note"),
        ([1, 1, b"note", 0], "note|msgpack"),
        ([1, 1, "", -1], "since"),
        ([1, 1, ""], "4 fields"),
    ],
)
def test_presence_table(fields: object, reason: str) -> None:
    with pytest.raises(ContactDecodeError, match=reason):
        decode_presence(_pack(fields))


def test_non_canonical_integers_are_refused() -> None:
    canonical = encode_presence(Presence(PresenceStatus.ONLINE, "", 5))
    widened = canonical[:-1] + b"\xcd\x00\x05"  # uint16 5 instead of fixint 5
    with pytest.raises(ContactDecodeError, match="canonical"):
        decode_presence(widened)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_contact_and_presence_decoders_are_total(data: bytes) -> None:
    for decode in (decode_contact, decode_presence):
        with contextlib.suppress(ContactDecodeError):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.integers(-(2**63), 2**64 - 1)
        | st.binary(max_size=40)
        | st.text(max_size=10),
        lambda children: st.lists(children, max_size=6),
        max_leaves=40,
    )
)
def test_decoders_are_total_on_nested_msgpack(value: object) -> None:
    data = _pack([1, value, value, value, value, value])
    for decode in (decode_contact, decode_presence, decode_message):
        try:
            decode(data)
        except ValueError as error:
            assert isinstance(error, (ContactDecodeError, HomeWireDecodeError))


def test_deeply_nested_payload_is_a_decode_error() -> None:
    data = b"\x91" * 5000 + b"\x00"
    for decode in (decode_contact, decode_presence, decode_message):
        with pytest.raises((ContactDecodeError, HomeWireDecodeError)):
            decode(data)


# -- the home protocol codec ---------------------------------------------------------------

T = b"t" * 8
MESSAGES: list[HomeMessage] = [
    Hello(T),
    Challenge(T, b"n" * 16, K1),
    Attach(T, K1, b"n" * 16, 20_000, b"s" * 64),
    Attached(T, Code.OK, b"k" * 8, 20_000, ("203.0.113.9", 40000)),
    Attached(T, Code.FULL, bytes(8), 0, ("2001:db8::9", 1)),
    Keepalive(T),
    KeepaliveAck(T, Code.UNKNOWN_SESSION),
    Detach(T),
    SetState(T, b"k" * 8, b"p" * 200, None),
    SetState(T, b"k" * 8, b"", tuple(bytes([i]) * 32 for i in range(MAX_ALLOW))),
    SetAck(T, Code.OK),
    Send(T, b"e" * 9000),
    SendResult(T, Code.NOT_ATTACHED),
    Deliver(T, b"e" * 100),
    DeliverAck(T),
    Watch(T, K1, K2, 1_800_000_000, b"s" * 64),
    Watched(T, Code.FORBIDDEN, K2, False, b"", bytes(8)),
    Watched(T, Code.OK, K2, True, b"p" * 200, b"w" * 8),
    Notify(K2, True, b"p", 2**53, b"w" * 8),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_home_messages_round_trip_whole_byte_by_byte_and_trailing(message: HomeMessage) -> None:
    data = encode_message(message)
    assert decode_message(data) == message
    for cut in range(0, len(data), max(1, len(data) // 200)):
        if cut == len(data):
            continue
        with pytest.raises(HomeWireDecodeError):
            decode_message(data[:cut])
    with pytest.raises(HomeWireDecodeError):
        decode_message(data + b"\0")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([99, T], "unknown message type"),
        (["x", T], "typed"),
        ([1, T, T], "2 fields"),
        ([1, b"short"], "txid"),
        ([2, T, b"n" * 15, K1], "nonce"),
        ([4, T, 77, T, 1, "1.2.3.4", 1], "code"),
        ([4, T, 0, T, 1, "1.2.3.4", 70000], "port"),
        ([8, T, T, b"p" * 201, None], "presence|msgpack"),
        ([8, T, T, b"", [K1] * (MAX_ALLOW + 1)], "allow|msgpack"),
        ([8, T, T, b"", [b"short"]], "allowed key"),
        ([15, T, 0, K1, 1, b"", T], "boolean"),
        ([16, K1, True, b"", 1, b"short"], "token"),
        ([3, T, K1, b"n" * 16, -5, b"s" * 64], "keepalive"),
    ],
)
def test_home_message_table(fields: object, reason: str) -> None:
    with pytest.raises(HomeWireDecodeError, match=reason):
        decode_message(_pack(fields))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_home_decoder_is_total(data: bytes) -> None:
    with contextlib.suppress(HomeWireDecodeError):
        decode_message(data)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 20),
    st.lists(
        st.none()
        | st.booleans()
        | st.integers(-5, 2**54)
        | st.binary(max_size=70)
        | st.text(max_size=50),
        max_size=8,
    ),
)
def test_home_decoder_is_total_on_typed_arrays(kind: int, rest: list[object]) -> None:
    with contextlib.suppress(HomeWireDecodeError):
        decode_message(_pack([kind, *rest]))


# -- watch bounds ---------------------------------------------------------------------------

A = ("10.0.0.1", 1)


def test_watch_bounds_per_target_per_watcher_and_total() -> None:
    table = WatchTable(lease=60, max_per_target=2, max_per_watcher=2, max_total=3)
    assert table.add(b"t1", b"w1", A, 0) is WatchOutcome.ADDED
    assert table.add(b"t1", b"w2", A, 0) is WatchOutcome.ADDED
    assert table.add(b"t1", b"w3", A, 0) is WatchOutcome.TARGET_FULL
    assert table.add(b"t2", b"w1", A, 0) is WatchOutcome.ADDED
    assert table.add(b"t3", b"w1", A, 0) is WatchOutcome.TABLE_FULL
    table.remove(b"t1", b"w2")
    assert table.add(b"t3", b"w1", A, 0) is WatchOutcome.WATCHER_FULL
    # A renewal is never refused for lack of room.
    assert table.add(b"t1", b"w1", ("10.0.0.2", 2), 1) is WatchOutcome.RENEWED
    assert [w.address for w in table.watchers(b"t1", 1)] == [("10.0.0.2", 2)]


def test_watch_leases_expire_and_free_their_room() -> None:
    table = WatchTable(lease=60, max_per_target=1, max_per_watcher=5, max_total=5)
    table.add(b"t", b"w1", A, 0)
    table.add(b"t", b"w1", A, 30)  # renewed: lives to 90
    assert table.expire(61) == 0
    assert table.expire(91) == 1
    assert len(table) == 0 and table.count_for_watcher(b"w1") == 0
    assert table.add(b"t", b"w2", A, 92) is WatchOutcome.ADDED


def test_allow_list_drops_watchers_not_on_it() -> None:
    table = WatchTable()
    for watcher in (b"w1", b"w2", b"w3"):
        table.add(b"t", watcher, A, 0)
    assert table.keep_only(b"t", frozenset({b"w2"})) == 2
    assert [w.key for w in table.watchers(b"t", 1)] == [b"w2"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 5)), max_size=80))
def test_watch_table_never_exceeds_its_bounds(operations: list[tuple[bool, int, int]]) -> None:
    table = WatchTable(lease=10, max_per_target=3, max_per_watcher=2, max_total=7)
    for step, (add, target, watcher) in enumerate(operations):
        t, w = bytes([target]), bytes([watcher])
        if add:
            table.add(t, w, A, step)
        else:
            table.remove(t, w)
        table.expire(step)
        assert len(table) <= 7
        for i in range(6):
            assert len(table.watchers(bytes([i]), step)) <= 3
            assert table.count_for_watcher(bytes([i])) <= 2

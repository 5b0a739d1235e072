"""RELAY_ADVERT payload codec: one case table both ways, bounds, canonical form, totality."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.connectivity.relay_advert import (
    ADVERT_VERSION,
    MAX_ADDRESSES,
    MAX_CAPACITY,
    MAX_STUN_ADDRESSES,
    RelayAdvert,
    RelayAdvertDecodeError,
    decode_relay_advert,
    encode_relay_advert,
)
from p2pnode.identity import Identity
from p2pnode.records import MAX_RECORD_BYTES, RecordKind, decode_record, sign_record


def advert(**changes: object) -> RelayAdvert:
    fields: dict[str, object] = {
        "udp": (("203.0.113.5", 3478),),
        "tcp": (("203.0.113.5", 3478),),
        "dht": (("203.0.113.5", 4000),),
        "realm": "p2pnode",
        "capacity": 100,
        "load": 3,
        "uptime": 3600,
        "software": "p2pnode 0.1.0",
    }
    fields.update(changes)
    return RelayAdvert(**fields)  # type: ignore[arg-type]


def pack(*fields: object) -> bytes:
    packed: bytes = msgpack.packb(list(fields), use_bin_type=True)
    return packed


VALID = [
    advert(),
    advert(tcp=(), dht=()),
    advert(udp=(), tcp=(("2001:db8::1", 443),)),
    advert(udp=(("203.0.113.5", 3478), ("2001:db8::5", 3478)), load=0, uptime=0, realm=""),
    advert(capacity=MAX_CAPACITY, load=MAX_CAPACITY, software="x" * 64),
    advert(stun=(("203.0.113.5", 3479),)),
    advert(stun=(("203.0.113.5", 3479), ("2001:db8::5", 3479))),
]


@pytest.mark.parametrize("value", VALID)
def test_round_trip_whole_and_canonical(value: RelayAdvert) -> None:
    data = encode_relay_advert(value)
    assert decode_relay_advert(data) == value
    assert encode_relay_advert(decode_relay_advert(data)) == data


@pytest.mark.parametrize("value", VALID)
def test_every_prefix_and_trailing_data_is_rejected(value: RelayAdvert) -> None:
    data = encode_relay_advert(value)
    for cut in range(len(data)):
        with pytest.raises(RelayAdvertDecodeError):
            decode_relay_advert(data[:cut])
    with pytest.raises(RelayAdvertDecodeError):
        decode_relay_advert(data + b"\x00")


def test_known_bytes() -> None:
    """The wire form is the documented array (a change here breaks every deployed peer)."""
    value = advert(tcp=(), dht=(), uptime=5, load=1, capacity=2, realm="r", software="s")
    assert encode_relay_advert(value) == pack(
        ADVERT_VERSION, [["203.0.113.5", 3478]], [], [], "r", 2, 1, 5, "s"
    )


def test_known_bytes_with_dial_back_stun() -> None:
    """``stun`` is a tenth field, present only when not empty (a 9-field advert still decodes)."""
    value = advert(tcp=(), dht=(), uptime=5, load=1, capacity=2, realm="r", software="s")
    with_stun = advert(
        tcp=(),
        dht=(),
        uptime=5,
        load=1,
        capacity=2,
        realm="r",
        software="s",
        stun=(("203.0.113.5", 3479),),
    )
    assert encode_relay_advert(with_stun) == pack(
        ADVERT_VERSION, [["203.0.113.5", 3478]], [], [], "r", 2, 1, 5, "s", [["203.0.113.5", 3479]]
    )
    assert decode_relay_advert(encode_relay_advert(value)).stun == ()


BAD_WIRE = [
    ("version 2", pack(2, [["1.2.3.4", 1]], [], [], "", 1, 0, 0, "")),
    ("short", pack(1, [["1.2.3.4", 1]], [], [], "", 1, 0, 0)),
    ("stun not a list", pack(1, [["1.2.3.4", 1]], [], [], "", 1, 0, 0, "", 0)),
    ("empty stun present", pack(1, [["1.2.3.4", 1]], [], [], "", 1, 0, 0, "", [])),
    ("three stun", pack(1, [["1.2.3.4", 1]], [], [], "", 1, 0, 0, "", [["1.2.3.4", 2]] * 3)),
    ("long", pack(1, [["1.2.3.4", 1]], [], [], "", 1, 0, 0, "", [["1.2.3.4", 2]], 0)),
    ("no address", pack(1, [], [], [], "", 1, 0, 0, "")),
    ("host name", pack(1, [["relay.example", 1]], [], [], "", 1, 0, 0, "")),
    ("non-canonical ipv6", pack(1, [["2001:DB8::1", 1]], [], [], "", 1, 0, 0, "")),
    ("port 0", pack(1, [["1.2.3.4", 0]], [], [], "", 1, 0, 0, "")),
    ("port too big", pack(1, [["1.2.3.4", 65536]], [], [], "", 1, 0, 0, "")),
    ("port as str", pack(1, [["1.2.3.4", "1"]], [], [], "", 1, 0, 0, "")),
    ("address triple", pack(1, [["1.2.3.4", 1, 2]], [], [], "", 1, 0, 0, "")),
    ("too many", pack(1, [["1.2.3.4", p] for p in range(1, 6)], [], [], "", 1, 0, 0, "")),
    ("capacity 0", pack(1, [["1.2.3.4", 1]], [], [], "", 0, 0, 0, "")),
    ("negative load", pack(1, [["1.2.3.4", 1]], [], [], "", 1, -1, 0, "")),
    ("bool capacity", pack(1, [["1.2.3.4", 1]], [], [], "", True, 0, 0, "")),
    ("realm bytes", pack(1, [["1.2.3.4", 1]], [], [], b"r", 1, 0, 0, "")),
    ("long realm", pack(1, [["1.2.3.4", 1]], [], [], "r" * 65, 1, 0, 0, "")),
    ("map", msgpack.packb({"udp": 1})),
    ("not an array", msgpack.packb(7)),
    ("empty array", pack()),
    ("non-canonical int", b"\x99\xd0\x01" + encode_relay_advert(advert())[2:]),
    ("garbage", b"\xc1\xff\x00"),
    ("empty", b""),
    ("huge", b"\x00" * 5000),
]


@pytest.mark.parametrize(("name", "data"), BAD_WIRE, ids=[n for n, _ in BAD_WIRE])
def test_bad_wire_is_a_decode_error(name: str, data: bytes) -> None:
    with pytest.raises(RelayAdvertDecodeError):
        decode_relay_advert(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"udp": (), "tcp": ()},
        {"udp": (("::FFFF:1.2.3.4", 1),)},
        {"udp": (("1.2.3.4", 1),) * (MAX_ADDRESSES + 1)},
        {"stun": (("1.2.3.4", 1),) * (MAX_STUN_ADDRESSES + 1)},
        {"stun": (("1.2.3.4", 0),)},
        {"capacity": 0},
        {"capacity": MAX_CAPACITY + 1},
        {"load": -1},
        {"uptime": -1},
        {"software": "é" * 33},
    ],
)
def test_constructor_refuses_out_of_bounds(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        advert(**changes)


def test_largest_advert_fits_a_record() -> None:
    """Fourteen IPv6 addresses and maximal strings still sign into one record."""
    v6 = tuple((f"2001:db8:ffff:ffff:ffff:ffff:ffff:fff{i}", 65535) for i in range(MAX_ADDRESSES))
    big = advert(
        udp=v6,
        tcp=v6,
        dht=v6,
        realm="r" * 64,
        software="s" * 64,
        capacity=MAX_CAPACITY,
        load=MAX_CAPACITY,
        uptime=2**32 - 1,
        stun=v6[:MAX_STUN_ADDRESSES],
    )
    payload = encode_relay_advert(big)
    record = sign_record(
        Identity.generate(bytes(32)),
        RecordKind.RELAY_ADVERT,
        "relays/15",
        payload,
        seq=2**63,
        now=2**33,
        ttl=86400,
    )
    assert len(record.encoded) <= MAX_RECORD_BYTES
    assert decode_relay_advert(decode_record(record.encoded).payload) == big


def test_load_fraction_and_room() -> None:
    assert advert(load=50, capacity=100).load_fraction == 0.5
    assert advert(load=99, capacity=100).has_room
    assert not advert(load=100, capacity=100).has_room


addresses = st.lists(
    st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)).flatmap(
        lambda h: st.tuples(st.just(h), st.integers(1, 65535))
    ),
    max_size=MAX_ADDRESSES,
).map(tuple)

adverts = st.builds(
    RelayAdvert,
    udp=addresses.filter(bool),
    tcp=addresses,
    dht=addresses,
    realm=st.text(max_size=16),
    capacity=st.integers(1, MAX_CAPACITY),
    load=st.integers(0, MAX_CAPACITY),
    uptime=st.integers(0, 2**32 - 1),
    software=st.text(max_size=16),
    stun=addresses.map(lambda a: a[:MAX_STUN_ADDRESSES]),
)


@given(adverts)
def test_property_round_trip(value: RelayAdvert) -> None:
    assert decode_relay_advert(encode_relay_advert(value)) == value


@given(st.binary(max_size=1200))
def test_property_any_bytes_give_advert_or_decode_error(data: bytes) -> None:
    try:
        value = decode_relay_advert(data)
    except RelayAdvertDecodeError:
        return
    assert encode_relay_advert(value) == data


@given(adverts, st.integers(0, 10_000), st.integers(0, 255))
def test_property_one_flipped_byte_is_value_or_decode_error(
    value: RelayAdvert, where: int, byte: int
) -> None:
    data = bytearray(encode_relay_advert(value))
    data[where % len(data)] = byte
    with contextlib.suppress(RelayAdvertDecodeError):
        decode_relay_advert(bytes(data))

"""The DHT codec: a case table both ways, truncation, trailing data, fuzz (DhtDecodeError only)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.dht.messages import (
    MAX_DATAGRAM_BYTES,
    PROTOCOL_VERSION,
    DhtDecodeError,
    ExtensionReply,
    ExtensionRequest,
    FindNode,
    FindValue,
    Flags,
    Frame,
    Message,
    Nodes,
    Ping,
    Pong,
    Store,
    StoreResult,
    StoreStatus,
    Value,
    WireContact,
    decode_frame,
    encode_frame,
)

KEY = bytes(range(32))
NODE_ID = bytes(range(20))
CONTACTS = (WireContact(KEY, ("127.0.0.1", 4000)), WireContact(KEY, ("2001:db8::1", 5)))

TOKEN = b"t" * 16
SIGNATURE = b"s" * 64

CASES: list[Message] = [
    Ping(bytes(16)),
    Pong(bytes(64), ("192.0.2.7", 65535)),
    Pong(bytes(64), ("2001:db8::7", 1), TOKEN),
    FindNode(NODE_ID),
    Nodes(()),
    Nodes(CONTACTS, TOKEN),
    FindValue(NODE_ID, 0),
    FindValue(NODE_ID, 16),
    Value((b"\x01\x02", b"r" * 1200), 7, CONTACTS),
    Store(NODE_ID, b"record"),
    Store(NODE_ID, b"record", TOKEN, SIGNATURE),
    StoreResult(StoreStatus.STORED, "", "", b"", SIGNATURE),
    StoreResult(StoreStatus.REJECTED, "rollback", "seq 1 < stored 2"),
    StoreResult(StoreStatus.UNPROVEN, "unproven", "sign the token", TOKEN),
    ExtensionRequest(64, (1, "two", b"three", [4])),
    ExtensionReply(127, ("ok",)),
]


def frame(message: Message, flags: Flags = Flags.NONE) -> Frame:
    return Frame(message, b"\x07" * 8, KEY, NODE_ID, flags)


@pytest.mark.parametrize("message", CASES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    original = frame(message, Flags.CLIENT | Flags.VERIFIED_YOU)
    assert decode_frame(encode_frame(original)) == original


@pytest.mark.parametrize("message", CASES, ids=lambda m: type(m).__name__)
def test_every_truncation_is_a_decode_error(message: Message) -> None:
    data = encode_frame(frame(message))
    for end in range(len(data)):
        with pytest.raises(DhtDecodeError):
            decode_frame(data[:end])


@pytest.mark.parametrize("message", CASES, ids=lambda m: type(m).__name__)
def test_trailing_data_is_a_decode_error(message: Message) -> None:
    with pytest.raises(DhtDecodeError):
        decode_frame(encode_frame(frame(message)) + b"\x00")


def test_padding_grows_requests_only() -> None:
    padded = encode_frame(frame(FindNode(NODE_ID)), pad_to=400)
    assert 390 <= len(padded) <= 400
    assert decode_frame(padded).message == FindNode(NODE_ID)
    assert len(encode_frame(frame(Nodes(())), pad_to=400)) < 100


@pytest.mark.parametrize(
    "host", ["localhost", "example.com", "", "1.2.3", "::g", "x" * 50, "127.0.0.1\x00"]
)
def test_contact_hosts_must_be_ip_literals(host: str) -> None:
    """A host name in a contact would make us resolve DNS on a peer's behalf."""
    body = [4, b"\x07" * 8, KEY, NODE_ID, 0, [[KEY, host, 4000]]]
    data = bytes((PROTOCOL_VERSION,)) + msgpack.packb(body, use_bin_type=True)
    with pytest.raises(DhtDecodeError):
        decode_frame(data)


@pytest.mark.parametrize(
    "body",
    [
        [200, b"\x07" * 8, KEY, NODE_ID, 0],  # unknown type
        [1, b"\x07" * 7, KEY, NODE_ID, 0, bytes(16), b""],  # short request id
        [1, b"\x07" * 8, KEY[:31], NODE_ID, 0, bytes(16), b""],  # short key
        [1, b"\x07" * 8, KEY, NODE_ID, 8, bytes(16), b""],  # unknown flag
        [1, b"\x07" * 8, KEY, NODE_ID, 0, bytes(15), b""],  # short nonce
        [2, b"\x07" * 8, KEY, NODE_ID, 0, bytes(64), "1.2.3.4", 0, b""],  # port 0
        [2, b"\x07" * 8, KEY, NODE_ID, 0, bytes(64), "1.2.3.4", 1, bytes(15)],  # short token
        [4, b"\x07" * 8, KEY, NODE_ID, 0, [], bytes(17)],  # long token
        [7, b"\x07" * 8, KEY, NODE_ID, 0, NODE_ID, b"r", bytes(16), b""],  # token, no proof
        [7, b"\x07" * 8, KEY, NODE_ID, 0, NODE_ID, b"r", b"", bytes(64)],  # proof, no token
        [7, b"\x07" * 8, KEY, NODE_ID, 0, NODE_ID, b"r", bytes(16), bytes(63)],  # short proof
        [8, b"\x07" * 8, KEY, NODE_ID, 0, 9, "", "", b"", b""],  # unknown store status
        [8, b"\x07" * 8, KEY, NODE_ID, 0, 0, "", "", b"", bytes(65)],  # long receipt
        [9, b"\x07" * 8, KEY, NODE_ID, 0, 3],  # extension reply with a core code
        [5, b"\x07" * 8, KEY, NODE_ID, 0, NODE_ID, -1, b""],  # negative offset
        {"type": 1},
    ],
)
def test_malformed_frames(body: object) -> None:
    data = bytes((PROTOCOL_VERSION,)) + msgpack.packb(body, use_bin_type=True)
    with pytest.raises(DhtDecodeError):
        decode_frame(data)


def test_wrong_version_and_oversize() -> None:
    data = encode_frame(frame(Ping(bytes(16))))
    with pytest.raises(DhtDecodeError):
        decode_frame(b"\x02" + data[1:])
    with pytest.raises(DhtDecodeError):
        decode_frame(data + bytes(MAX_DATAGRAM_BYTES))


@given(st.binary(max_size=2000))
def test_fuzz_any_bytes(data: bytes) -> None:
    with contextlib.suppress(DhtDecodeError):
        decode_frame(data)


@given(st.sampled_from(CASES), st.data())
def test_fuzz_mutated_valid_frames(message: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode_frame(frame(message)))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_frame(bytes(encoded))
    except DhtDecodeError:
        return
    assert isinstance(decoded, Frame)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda children: st.lists(children, max_size=6),
    max_leaves=20,
)


@given(st.lists(msgpack_values, max_size=10))
def test_fuzz_arbitrary_msgpack_arrays(items: list[object]) -> None:
    data = bytes((PROTOCOL_VERSION,)) + msgpack.packb(items, use_bin_type=True)
    with contextlib.suppress(DhtDecodeError):
        decode_frame(data)

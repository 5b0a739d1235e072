"""The DHT codec: a case table both ways, truncation, trailing data, fuzz (DhtDecodeError only)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.dht.messages import (
    MAX_DATAGRAM_BYTES,
    MAX_FIELD_DEPTH,
    MAX_PAD_BYTES,
    PROTOCOL_VERSION,
    DhtDecodeError,
    ExtensionReply,
    ExtensionRequest,
    FindNode,
    FindValue,
    Flags,
    Frame,
    Message,
    MessageType,
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
    Value((), 0, CONTACTS, TOKEN),
    Store(NODE_ID, b"record"),
    Store(NODE_ID, b"record", TOKEN, SIGNATURE),
    StoreResult(StoreStatus.STORED, "", "", b"", SIGNATURE),
    StoreResult(StoreStatus.REJECTED, "rollback", "seq 1 < stored 2"),
    StoreResult(StoreStatus.UNPROVEN, "unproven", "sign the token", TOKEN),
    ExtensionRequest(64, (1, "two", b"three", [4])),
    ExtensionReply(127, ("ok",)),
]


def frame(
    message: Message, flags: Flags = Flags.NONE, cookie: bytes = b"", key_proof: bytes = b""
) -> Frame:
    return Frame(message, b"\x07" * 8, KEY, NODE_ID, flags, cookie, key_proof)


@pytest.mark.parametrize("message", CASES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    original = frame(
        message, Flags.CLIENT | Flags.VERIFIED_YOU | Flags.PROVE | Flags.PROVEN_YOU, b"", SIGNATURE
    )
    assert decode_frame(encode_frame(original)) == original
    with_cookie = frame(message, cookie=TOKEN)
    assert decode_frame(encode_frame(with_cookie)) == with_cookie


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


@given(pad_to=st.integers(0, 1600), proof=st.sampled_from([b"", b"\x05" * 64]))
def test_padding_is_the_frame_packed_with_its_padding(pad_to: int, proof: bytes) -> None:
    # encode_frame grows the empty padding in place (no second pack): the bytes are
    # what msgpack gives for the frame with that padding (bin 8 and bin 16 headers).
    message = FindNode(NODE_ID)
    padded = encode_frame(Frame(message, b"\x07" * 8, KEY, NODE_ID, 0, b"", proof), pad_to=pad_to)
    head = [int(MessageType.FIND_NODE), b"\x07" * 8, KEY, NODE_ID, 0, b"", proof, NODE_ID]
    items = msgpack.unpackb(padded[1:])
    assert items[:-1] == head
    assert padded == bytes((PROTOCOL_VERSION,)) + msgpack.packb(
        [*head, items[-1]], use_bin_type=True
    )
    padding = items[-1]
    assert set(padding) <= {0} and len(padding) <= MAX_PAD_BYTES
    if not padding:  # already about as long as asked
        assert len(padded) >= pad_to - 3
    elif len(padding) < MAX_PAD_BYTES:
        assert pad_to - 3 <= len(padded) <= pad_to


@pytest.mark.parametrize(
    "host", ["localhost", "example.com", "", "1.2.3", "::g", "x" * 50, "127.0.0.1\x00"]
)
def test_contact_hosts_must_be_ip_literals(host: str) -> None:
    """A host name in a contact would make us resolve DNS on a peer's behalf."""
    body = [4, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", [[KEY, host, 4000]], b""]
    data = bytes((PROTOCOL_VERSION,)) + msgpack.packb(body, use_bin_type=True)
    with pytest.raises(DhtDecodeError):
        decode_frame(data)


@pytest.mark.parametrize(
    "body",
    [
        [200, b"\x07" * 8, KEY, NODE_ID, 0, b""],  # unknown type
        [1, b"\x07" * 8, KEY, NODE_ID, 0, bytes(15), bytes(16), b""],  # short cookie
        [1, b"\x07" * 8, KEY, NODE_ID, 0, 7, bytes(16), b""],  # cookie not binary
        [1, b"\x07" * 8, KEY, NODE_ID, 0],  # no cookie (protocol version 1's frame)
        [1, b"\x07" * 7, KEY, NODE_ID, 0, b"", b"", bytes(16), b""],  # short request id
        [1, b"\x07" * 8, KEY[:31], NODE_ID, 0, b"", b"", bytes(16), b""],  # short key
        [1, b"\x07" * 8, KEY, NODE_ID, 16, b"", b"", bytes(16), b""],  # unknown flag
        [1, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", bytes(15), b""],  # short nonce
        [2, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", bytes(64), "1.2.3.4", 0, b""],  # port 0
        [
            2,
            b"\x07" * 8,
            KEY,
            NODE_ID,
            0,
            b"",
            b"",
            bytes(64),
            "1.2.3.4",
            1,
            bytes(15),
        ],  # short token
        [4, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", [], bytes(17)],  # long token
        [
            7,
            b"\x07" * 8,
            KEY,
            NODE_ID,
            0,
            b"",
            b"",
            NODE_ID,
            b"r",
            bytes(16),
            b"",
        ],  # token, no proof
        [
            7,
            b"\x07" * 8,
            KEY,
            NODE_ID,
            0,
            b"",
            b"",
            NODE_ID,
            b"r",
            b"",
            bytes(64),
        ],  # proof, no token
        [
            7,
            b"\x07" * 8,
            KEY,
            NODE_ID,
            0,
            b"",
            b"",
            NODE_ID,
            b"r",
            bytes(16),
            bytes(63),
        ],  # short proof
        [8, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", 9, "", "", b"", b""],  # unknown store status
        [8, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", 0, "", "", b"", bytes(65)],  # long receipt
        [9, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", 3],  # extension reply with a core code
        [5, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", NODE_ID, -1, b""],  # negative offset
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
        decode_frame(b"\x01" + data[1:])  # version 1 frames had no cookie
    with pytest.raises(DhtDecodeError):
        decode_frame(b"\x03" + data[1:])
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


def _nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_FIELD_DEPTH + 1, 100, 1000])
@pytest.mark.parametrize("code", [64, 9])  # an extension request, an extension reply
def test_deeply_nested_extension_fields_are_a_decode_error(code: int, depth: int) -> None:
    """Finding 1 of issue 10: nesting ~1,000 deep must not reach decoders that recurse."""
    fields: list[object] = [_nested(depth)]
    head: list[object] = [code, b"\x07" * 8, KEY, NODE_ID, 0, b"", b""]
    body = [*head, *fields, b""] if code == 64 else [*head, 64, *fields]
    data = bytes((PROTOCOL_VERSION,)) + msgpack.packb(body, use_bin_type=True)
    with pytest.raises(DhtDecodeError):
        decode_frame(data)


def test_nesting_within_the_bound_is_kept() -> None:
    fields = (_nested(MAX_FIELD_DEPTH - 1, "leaf"),)
    original = frame(ExtensionRequest(64, fields))
    assert decode_frame(encode_frame(original)).message == ExtensionRequest(64, fields)


@given(st.integers(0, 900), st.integers(0, 6), st.sampled_from([1, 4, 5, 6, 7, 8, 9, 64]))
def test_fuzz_deep_nesting_in_any_field(depth: int, position: int, code: int) -> None:
    """Deep nesting at any position of any message type: a frame or DhtDecodeError only."""
    items: list[object] = [code, b"\x07" * 8, KEY, NODE_ID, 0, b"", b"", NODE_ID, 0, b""]
    items.insert(position + 5, _nested(depth, b"x"))
    data = bytes((PROTOCOL_VERSION,)) + msgpack.packb(items, use_bin_type=True)
    try:
        decoded = decode_frame(data)
    except DhtDecodeError:
        return
    if isinstance(decoded.message, ExtensionRequest | ExtensionReply):
        assert depth <= MAX_FIELD_DEPTH

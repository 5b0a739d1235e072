"""ChannelData codec and the TURN-over-TCP framer: table, whole/byte-by-byte/trailing, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.stun import Software, StunClass, StunMessage, StunMethod, encode_message
from relay.channeldata import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    LEGACY_CHANNEL_MAX,
    MAX_STREAM_BUFFER,
    ChannelDataDecodeError,
    StreamFramer,
    decode_channel_data,
    encode_channel_data,
    is_channel_data,
    is_valid_channel_number,
)

CASES = [
    # (number, payload, unpadded wire, padded wire)
    (0x4000, b"", b"\x40\x00\x00\x00", b"\x40\x00\x00\x00"),
    (0x4001, b"a", b"\x40\x01\x00\x01a", b"\x40\x01\x00\x01a\x00\x00\x00"),
    (0x4FFF, b"abcd", b"\x4f\xff\x00\x04abcd", b"\x4f\xff\x00\x04abcd"),
    (0x4123, b"abcde", b"\x41\x23\x00\x05abcde", b"\x41\x23\x00\x05abcde\x00\x00\x00"),
]


@pytest.mark.parametrize(("number", "payload", "wire", "padded"), CASES)
def test_case_table(number: int, payload: bytes, wire: bytes, padded: bytes) -> None:
    assert encode_channel_data(number, payload) == wire
    assert encode_channel_data(number, payload, pad=True) == padded
    assert decode_channel_data(wire) == (number, payload)
    assert decode_channel_data(padded) == (number, payload)  # padding is ignored
    assert decode_channel_data(wire + b"trailing") == (number, payload)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x40",
        b"\x40\x00\x00",
        b"\x40\x00\x00\x05abcd",
        b"\x3f\xff\x00\x00",
        b"\x50\x00\x00\x00",
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(ChannelDataDecodeError):
        decode_channel_data(data)


def test_channel_ranges() -> None:
    assert is_valid_channel_number(CHANNEL_MIN) and is_valid_channel_number(CHANNEL_MAX)
    assert not is_valid_channel_number(0x3FFF) and not is_valid_channel_number(0x5000)
    assert is_valid_channel_number(0x5DF8, LEGACY_CHANNEL_MAX)
    assert decode_channel_data(b"\x5d\xf8\x00\x01x", LEGACY_CHANNEL_MAX) == (0x5DF8, b"x")
    assert is_channel_data(b"\x4f\x00") and not is_channel_data(b"\x50\x00")
    assert is_channel_data(b"\x7f\x00", LEGACY_CHANNEL_MAX) and not is_channel_data(b"\x00\x01")
    with pytest.raises(ValueError, match="outside"):
        encode_channel_data(0x5000, b"")
    with pytest.raises(ValueError, match="fit"):
        encode_channel_data(0x4000, bytes(0x10000))


@given(st.binary(max_size=80))
def test_decoder_is_total(data: bytes) -> None:
    try:
        number, payload = decode_channel_data(data)
    except ChannelDataDecodeError:
        return
    assert CHANNEL_MIN <= number <= CHANNEL_MAX
    assert data[4 : 4 + len(payload)] == payload


@given(st.integers(CHANNEL_MIN, CHANNEL_MAX), st.binary(max_size=300), st.booleans())
def test_round_trip(number: int, payload: bytes, pad: bool) -> None:
    wire = encode_channel_data(number, payload, pad=pad)
    assert decode_channel_data(wire) == (number, payload)
    assert not pad or len(wire) % 4 == 0


def _stream() -> tuple[bytes, list[bytes]]:
    stun = encode_message(
        StunMessage(StunMethod.BINDING, StunClass.REQUEST, b"x" * 12, (Software("abc"),))
    )
    frames = [
        stun,
        encode_channel_data(0x4000, b"hello", pad=True),
        encode_channel_data(0x4001, b"", pad=True),
        stun,
        encode_channel_data(0x4002, b"1234", pad=True),
    ]
    return b"".join(frames), frames


def test_framer_whole_and_byte_by_byte() -> None:
    stream, frames = _stream()
    assert StreamFramer().feed(stream) == frames
    framer = StreamFramer()
    got: list[bytes] = []
    for index in range(len(stream)):
        got.extend(framer.feed(stream[index : index + 1]))
    assert got == frames
    assert framer.buffered == 0
    partial = StreamFramer()
    assert partial.feed(stream[:-1]) == frames[:-1]
    assert partial.buffered == len(frames[-1]) - 1


@pytest.mark.parametrize("garbage", [b"\x80\x00\x00\x00", b"\xff\xff\xff\xff", b"\x00\x01\x00\x03"])
def test_framer_rejects_unframeable(garbage: bytes) -> None:
    with pytest.raises(ChannelDataDecodeError):
        StreamFramer().feed(garbage + bytes(20))


def test_framer_is_bounded() -> None:
    """A frame claiming the largest length is held until complete, never more than that."""
    framer = StreamFramer()
    header = b"\x00\x01\xff\xfc" + bytes(16)  # STUN header claiming 65532 attribute bytes
    frames = framer.feed(header)
    for _ in range(70):
        frames += framer.feed(bytes(1000))
        assert framer.buffered <= MAX_STREAM_BUFFER
    # The big frame, then the zero bytes after it read as empty 20-byte STUN headers.
    assert len(frames[0]) == 20 + 0xFFFC
    assert all(len(frame) == 20 for frame in frames[1:])
    assert framer.buffered == (70 * 1000 + 20 - len(frames[0])) % 20


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_framer_is_total(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                assert len(frame) >= 4
    except ChannelDataDecodeError:
        pass

"""ChannelData messages (RFC 8656 §12.4) and the TURN-over-TCP stream framing (§12.5).

A ChannelData message is a 4-byte header (channel number, length) and the
application data. Over UDP a datagram holds exactly one message (trailing
padding allowed); over TCP the stream carries STUN messages and ChannelData
messages back to back, ChannelData padded to a multiple of four bytes.

Invariants: every decoder is total (bytes -> value or ``ChannelDataDecodeError``);
``StreamFramer`` never holds more than ``MAX_STREAM_BUFFER`` bytes. The hot path
uses ``struct`` on the raw bytes and allocates no objects but the payload slice.
"""

from __future__ import annotations

import struct

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "LEGACY_CHANNEL_MAX",
    "MAX_STREAM_BUFFER",
    "ChannelDataDecodeError",
    "StreamFramer",
    "decode_channel_data",
    "encode_channel_data",
    "frame_length",
    "is_channel_data",
    "is_valid_channel_number",
]

# RFC 8656 §12: "The channel number ... MUST be in the range 0x4000 through 0x4FFF (inclusive)."
CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x4FFF
# RFC 5766 §11 allowed up to 0x7FFF and coturn's clients still use that range
# (turnutils_uclient binds e.g. 0x5DF8): a server option widens to it for interop.
LEGACY_CHANNEL_MAX = 0x7FFF

STUN_HEADER_LENGTH = 20
CHANNEL_HEADER_LENGTH = 4
# The largest frame a client may send over TCP: a full 64 KiB ChannelData or STUN message.
MAX_FRAME = CHANNEL_HEADER_LENGTH + 0xFFFF + 3
# A TCP client that sends faster than we forward gets disconnected, not buffered forever.
MAX_STREAM_BUFFER = 4 * MAX_FRAME

_HEADER = struct.Struct("!HH")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


class ChannelDataDecodeError(ValueError):
    """Bytes that are not a well-formed ChannelData message (or TURN TCP stream)."""


def is_valid_channel_number(number: int, channel_max: int = CHANNEL_MAX) -> bool:
    """RFC 8656 §12: 0x4000 through 0x4FFF are the channel numbers a client may bind."""
    return CHANNEL_MIN <= number <= channel_max


def is_channel_data(data: bytes, channel_max: int = CHANNEL_MAX) -> bool:
    """RFC 7983 demultiplexing: first byte 64..79 is ChannelData, 0..3 is STUN."""
    return len(data) > 0 and 64 <= data[0] <= channel_max >> 8


def decode_channel_data(data: bytes, channel_max: int = CHANNEL_MAX) -> tuple[int, bytes]:
    """(channel number, application data) of one ChannelData message.

    RFC 8656 §12.5: "If the ChannelData message is received in a UDP datagram,
    and if the UDP datagram is too short to contain the claimed length of the
    ChannelData message ... then the message is silently discarded." Extra bytes
    after the claimed length (padding) are allowed and ignored.
    """
    if len(data) < CHANNEL_HEADER_LENGTH:
        raise ChannelDataDecodeError(f"{len(data)} bytes: shorter than the 4-byte header")
    number, length = _HEADER.unpack_from(data)
    if not CHANNEL_MIN <= number <= channel_max:
        raise ChannelDataDecodeError(
            f"channel number {number:#06x} outside 0x4000-{channel_max:#x}"
        )
    if len(data) < CHANNEL_HEADER_LENGTH + length:
        raise ChannelDataDecodeError(f"claims {length} bytes, carries {len(data) - 4}")
    return number, data[CHANNEL_HEADER_LENGTH : CHANNEL_HEADER_LENGTH + length]


def encode_channel_data(
    number: int, payload: bytes, *, pad: bool = False, channel_max: int = CHANNEL_MAX
) -> bytes:
    """One ChannelData message; ``pad`` for stream transports (RFC 8656 §12.5: "over TCP ...
    the ChannelData message MUST be padded to a multiple of four bytes")."""
    if not CHANNEL_MIN <= number <= channel_max:
        raise ValueError(f"channel number {number:#06x} outside 0x4000-{channel_max:#x}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"{len(payload)} bytes do not fit a ChannelData message")
    header = _HEADER.pack(number, len(payload))
    if pad:
        return header + payload + _PADDING[len(payload) & 3]
    return header + payload


def frame_length(buffer: bytes | bytearray, channel_max: int = CHANNEL_MAX) -> int | None:
    """Length of the first frame in a TURN TCP stream, None if the header is incomplete.

    RFC 8656 §12.5: over TCP the receiver tells STUN from ChannelData by the
    first two bits and uses the length field to find the next message; a
    ChannelData message is followed by padding to a multiple of four.
    """
    if len(buffer) < CHANNEL_HEADER_LENGTH:
        return None
    first = buffer[0]
    length = (buffer[2] << 8) | buffer[3]
    if first < 4:  # STUN: top two bits 00 (RFC 8489 §5)
        if length & 3:
            raise ChannelDataDecodeError(f"STUN length {length} is not a multiple of 4")
        return STUN_HEADER_LENGTH + length
    if 64 <= first <= channel_max >> 8:  # ChannelData: top two bits 01
        return CHANNEL_HEADER_LENGTH + ((length + 3) & ~3)
    raise ChannelDataDecodeError(f"first byte {first} is neither STUN nor ChannelData")


class StreamFramer:
    """Cuts a TURN TCP byte stream into STUN and ChannelData frames.

    A ChannelData frame keeps its padding (``decode_channel_data`` ignores it); the buffer is
    bounded by ``MAX_STREAM_BUFFER`` (``feed`` raises past it, so the caller
    closes the connection).
    """

    __slots__ = ("_buffer", "_channel_max")

    def __init__(self, channel_max: int = CHANNEL_MAX) -> None:
        self._buffer = bytearray()
        self._channel_max = channel_max

    def feed(self, data: bytes) -> list[bytes]:
        """Append received bytes; return the complete frames now available."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        while True:
            view = buffer[offset : offset + CHANNEL_HEADER_LENGTH]
            size = frame_length(view, self._channel_max)
            if size is None or len(buffer) - offset < size:
                break
            frames.append(bytes(buffer[offset : offset + size]))
            offset += size
        if offset:
            del buffer[:offset]
        if len(buffer) > MAX_STREAM_BUFFER:
            raise ChannelDataDecodeError(f"{len(buffer)} bytes buffered without a frame")
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)

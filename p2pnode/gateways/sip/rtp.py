"""RTP header codec (RFC 3550 §5.1) and RFC 4733 telephone-events, total decoders.

The media relay only needs the fixed header (to latch, count and check
sequence/SSRC) and the DTMF event payload (to pass digits through on whatever
payload type was negotiated, and to send SIP INFO digits as RTP). Both
decoders turn any bytes into a value or an ``RtpDecodeError``.

:func:`dtmf_schedule` paces one digit the way RFC 4733 §2.5 describes: a
packet every ``ptime`` with a growing duration, the same timestamp for the
whole event, the marker bit on the first packet and three end packets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "DTMF_EVENTS",
    "RtpDecodeError",
    "RtpPacket",
    "TelephoneEvent",
    "dtmf_schedule",
]

_HEADER = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")
# RFC 4733 §3.2: events 0-9, *, #, A-D.
DTMF_EVENTS = {**{str(digit): digit for digit in range(10)}, "*": 10, "#": 11}
DTMF_EVENTS.update({letter: 12 + index for index, letter in enumerate("ABCD")})


class RtpDecodeError(ValueError):
    """Bytes that are not an RTP packet (or not a telephone-event payload)."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile, data) of RFC 3550 §5.3.1
    padding: int = 0  # number of padding bytes at the end (0: no P bit)

    def encode(self) -> bytes:
        first = 0x80 | (0x20 if self.padding else 0) | (0x10 if self.extension else 0)
        first |= len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        out = bytearray(_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc))
        for csrc in self.csrcs:
            out += struct.pack("!I", csrc)
        if self.extension is not None:
            profile, data = self.extension
            out += struct.pack("!HH", profile, len(data) // 4) + data
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)

    @staticmethod
    def decode(data: bytes) -> RtpPacket:
        if len(data) < _HEADER.size:
            raise RtpDecodeError("shorter than an RTP header")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise RtpDecodeError("not RTP version 2")
        offset = _HEADER.size
        count = first & 0x0F
        if len(data) < offset + 4 * count:
            raise RtpDecodeError("CSRC list overruns the packet")
        csrcs = struct.unpack_from(f"!{count}I", data, offset)
        offset += 4 * count
        extension = None
        if first & 0x10:
            if len(data) < offset + 4:
                raise RtpDecodeError("extension header overruns the packet")
            profile, words = struct.unpack_from("!HH", data, offset)
            offset += 4
            if len(data) < offset + 4 * words:
                raise RtpDecodeError("extension overruns the packet")
            extension = (profile, bytes(data[offset : offset + 4 * words]))
            offset += 4 * words
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or end - padding < offset:
                raise RtpDecodeError("bad padding")
            end -= padding
        return RtpPacket(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=tuple(csrcs),
            extension=extension,
            padding=padding,
        )


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """RFC 4733 §2.3 payload: event, E bit, volume (0..63, -dBm0), duration (timestamp units)."""

    event: int
    end: bool
    volume: int
    duration: int

    def encode(self) -> bytes:
        return _EVENT.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration
        )

    @staticmethod
    def decode(payload: bytes) -> TelephoneEvent:
        # RFC 4733 §2.3: one event is 4 bytes; several (redundancy) are a multiple of 4.
        if len(payload) < 4 or len(payload) % 4:
            raise RtpDecodeError("telephone-event payload is not a multiple of 4 bytes")
        event, flags, duration = _EVENT.unpack_from(payload, len(payload) - 4)
        return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def dtmf_schedule(
    digit: str,
    *,
    payload_type: int,
    ssrc: int,
    first_sequence: int,
    timestamp: int,
    clock_rate: int = 8000,
    duration_ms: int = 100,
    ptime_ms: int = 20,
    volume: int = 10,
) -> list[tuple[float, RtpPacket]]:
    """(seconds after the start, packet) for one digit, paced every ``ptime_ms``."""
    if digit.upper() not in DTMF_EVENTS:
        raise ValueError("not a DTMF digit")
    event = DTMF_EVENTS[digit.upper()]
    step = clock_rate * ptime_ms // 1000
    total = clock_rate * duration_ms // 1000
    schedule: list[tuple[float, RtpPacket]] = []
    sequence = first_sequence
    elapsed = step
    index = 0
    while elapsed < total:
        payload = TelephoneEvent(event, False, volume, elapsed).encode()
        packet = RtpPacket(
            payload_type, sequence & 0xFFFF, timestamp, ssrc, payload, marker=index == 0
        )
        schedule.append((index * ptime_ms / 1000, packet))
        sequence += 1
        elapsed += step
        index += 1
    end = TelephoneEvent(event, True, volume, total).encode()
    for _ in range(3):  # RFC 4733 §2.5.1.4: the end packet goes out three times
        packet = RtpPacket(payload_type, sequence & 0xFFFF, timestamp, ssrc, end, marker=index == 0)
        schedule.append((index * ptime_ms / 1000, packet))
        sequence += 1
        index += 1
    return schedule

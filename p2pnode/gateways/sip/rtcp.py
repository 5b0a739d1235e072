"""RTCP sender and receiver reports (RFC 3550 §6.4), a total decoder and the encoder.

What the phone leg needs: our SR/RR with one report block about the phone's
stream plus the SDES CNAME every compound must carry (RFC 3550 §6.1), and the
phone's SR/RR read back (its loss, jitter, and LSR/DLSR for the round trip).
SDES, BYE, APP and feedback packets of a compound are skipped, counted in
:attr:`RtcpCompound.other`.

The decoder is total: any bytes give an :class:`RtcpCompound` or an
:class:`RtcpDecodeError` carrying one :class:`RtcpDropReason` (the socket
handler counts drops by it). Bounds: a compound is at most
``MAX_COMPOUND_BYTES`` and ``MAX_COMPOUND_PACKETS`` packets; the report count
is 5 bits (31 blocks) and each block must fit its packet's length.

:func:`is_rtcp` is the RFC 5761 §4 demultiplexing test for rtcp-mux: the
second byte of an RTCP packet is its type 200-204 (RTP payload types 72-76
with the marker bit), which no dynamic or static audio type uses.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "MAX_COMPOUND_BYTES",
    "MAX_COMPOUND_PACKETS",
    "PT_RR",
    "PT_SDES",
    "PT_SR",
    "ReceiverReport",
    "ReportBlock",
    "RtcpCompound",
    "RtcpDecodeError",
    "RtcpDropReason",
    "SenderInfo",
    "SenderReport",
    "decode_compound",
    "encode_compound",
    "is_rtcp",
    "ntp_middle",
    "ntp_timestamp",
]

PT_SR = 200
PT_RR = 201
PT_SDES = 202
MAX_COMPOUND_BYTES = 1500  # one datagram on an Ethernet path; larger is refused
MAX_COMPOUND_PACKETS = 16  # SR/RR + SDES + BYE + a few feedback packets
MAX_CNAME_BYTES = 255  # RFC 3550 §6.5: an 8-bit length
_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!QIII")
_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction+cumulative, highest, jitter, lsr, dlsr
_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


class RtcpDropReason(enum.Enum):
    TOO_SHORT = "too_short"
    TOO_LARGE = "too_large"
    BAD_VERSION = "bad_version"
    BAD_LENGTH = "bad_length"
    BAD_PADDING = "bad_padding"
    BAD_REPORT_COUNT = "bad_report_count"
    NOT_REPORT_FIRST = "not_report_first"  # RFC 3550 §6.1: a compound starts with SR or RR
    TOO_MANY_PACKETS = "too_many_packets"


class RtcpDecodeError(ValueError):
    """Bytes that are not a valid RTCP compound; ``reason`` says why (no peer bytes echoed)."""

    def __init__(self, reason: RtcpDropReason) -> None:
        super().__init__(f"bad RTCP: {reason.value}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1: what the reporter received of source ``ssrc``."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost/expected * 256 since the last report
    cumulative_lost: int  # signed 24-bit (duplicates can make it negative)
    highest_sequence: int  # extended: cycles << 16 | highest sequence
    jitter: int  # interarrival jitter in the source's timestamp units
    lsr: int  # middle 32 bits of the NTP timestamp of the last SR from ``ssrc``, 0 if none
    dlsr: int  # delay since that SR, 1/65536 s


@dataclass(frozen=True, slots=True)
class SenderInfo:
    ntp: int  # 64-bit NTP timestamp (RFC 3550 §4)
    rtp_timestamp: int
    packet_count: int
    octet_count: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    info: SenderInfo
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class RtcpCompound:
    """The reports of one compound packet, in order, and how many other packets it held."""

    reports: tuple[SenderReport | ReceiverReport, ...]
    other: int = 0


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: an RTCP packet on a muxed RTP port (packet type 192-223)."""
    return len(data) > 1 and 192 <= data[1] <= 223


def ntp_timestamp(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time."""
    return int((unix_seconds + _NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle(ntp: int) -> int:
    """RFC 3550 §6.4.1 LSR: the middle 32 bits of an NTP timestamp (1/65536 s units)."""
    return (ntp >> 16) & 0xFFFF_FFFF


def _blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if offset + count * _BLOCK.size > end:
        raise RtcpDecodeError(RtcpDropReason.BAD_REPORT_COUNT)
    blocks = []
    for index in range(count):
        ssrc, loss, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset + index * 24)
        cumulative = loss & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, loss >> 24, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def decode_compound(data: bytes) -> RtcpCompound:
    """Every packet of a compound (RFC 3550 §6.1 checks); raises RtcpDecodeError."""
    if len(data) > MAX_COMPOUND_BYTES:
        raise RtcpDecodeError(RtcpDropReason.TOO_LARGE)
    if len(data) < _HEADER.size:
        raise RtcpDecodeError(RtcpDropReason.TOO_SHORT)
    reports: list[SenderReport | ReceiverReport] = []
    other = 0
    offset = 0
    packets = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise RtcpDecodeError(RtcpDropReason.BAD_LENGTH)
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpDecodeError(RtcpDropReason.BAD_VERSION)
        end = offset + (words + 1) * 4
        if end > len(data):
            raise RtcpDecodeError(RtcpDropReason.BAD_LENGTH)
        packets += 1
        if packets > MAX_COMPOUND_PACKETS:
            raise RtcpDecodeError(RtcpDropReason.TOO_MANY_PACKETS)
        if packets == 1 and packet_type not in (PT_SR, PT_RR):
            raise RtcpDecodeError(RtcpDropReason.NOT_REPORT_FIRST)
        if first & 0x20:
            # RFC 3550 §6.4.1: only the last packet of a compound may be padded.
            padding = data[end - 1]
            if end != len(data) or padding == 0 or padding > end - offset - _HEADER.size:
                raise RtcpDecodeError(RtcpDropReason.BAD_PADDING)
            end -= padding
        count = first & 0x1F
        body = offset + _HEADER.size
        if packet_type == PT_SR:
            if end - body < _SSRC.size + _SENDER_INFO.size:
                raise RtcpDecodeError(RtcpDropReason.BAD_LENGTH)
            (ssrc,) = _SSRC.unpack_from(data, body)
            info = SenderInfo(*_SENDER_INFO.unpack_from(data, body + 4))
            reports.append(SenderReport(ssrc, info, _blocks(data, body + 24, count, end)))
        elif packet_type == PT_RR:
            if end - body < _SSRC.size:
                raise RtcpDecodeError(RtcpDropReason.BAD_LENGTH)
            (ssrc,) = _SSRC.unpack_from(data, body)
            reports.append(ReceiverReport(ssrc, _blocks(data, body + 4, count, end)))
        else:
            other += 1
        offset = (words + 1) * 4 + offset
    return RtcpCompound(tuple(reports), other)


def _encode_block(block: ReportBlock) -> bytes:
    loss = (min(max(block.fraction_lost, 0), 255) << 24) | (block.cumulative_lost & 0xFFFFFF)
    return _BLOCK.pack(
        block.ssrc & 0xFFFFFFFF,
        loss,
        block.highest_sequence & 0xFFFFFFFF,
        block.jitter & 0xFFFFFFFF,
        block.lsr & 0xFFFFFFFF,
        block.dlsr & 0xFFFFFFFF,
    )


def _encode_report(report: SenderReport | ReceiverReport) -> bytes:
    if len(report.blocks) > 31:
        raise ValueError("at most 31 report blocks")
    body = bytearray(_SSRC.pack(report.ssrc & 0xFFFFFFFF))
    if isinstance(report, SenderReport):
        info = report.info
        body += _SENDER_INFO.pack(
            info.ntp & 0xFFFF_FFFF_FFFF_FFFF,
            info.rtp_timestamp & 0xFFFFFFFF,
            info.packet_count & 0xFFFFFFFF,
            info.octet_count & 0xFFFFFFFF,
        )
    for block in report.blocks:
        body += _encode_block(block)
    packet_type = PT_SR if isinstance(report, SenderReport) else PT_RR
    return _HEADER.pack(0x80 | len(report.blocks), packet_type, len(body) // 4) + bytes(body)


def _encode_cname(ssrc: int, cname: str) -> bytes:
    """RFC 3550 §6.5: one chunk, CNAME item, END, padded to 32 bits."""
    text = cname.encode("utf-8")
    if len(text) > MAX_CNAME_BYTES:
        raise ValueError("CNAME longer than 255 bytes")
    chunk = _SSRC.pack(ssrc & 0xFFFFFFFF) + bytes([1, len(text)]) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _HEADER.pack(0x81, PT_SDES, len(chunk) // 4) + chunk


def encode_compound(report: SenderReport | ReceiverReport, cname: str) -> bytes:
    """Our report then SDES CNAME: the smallest compound RFC 3550 §6.1 allows."""
    return _encode_report(report) + _encode_cname(report.ssrc, cname)

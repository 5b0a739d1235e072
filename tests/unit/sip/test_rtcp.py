"""RTCP SR/RR codec (RFC 3550 §6.4): case table, prefixes, trailing data, fuzz, a hand vector."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.rtcp import (
    MAX_COMPOUND_BYTES,
    MAX_COMPOUND_PACKETS,
    ReceiverReport,
    ReportBlock,
    RtcpCompound,
    RtcpDecodeError,
    RtcpDropReason,
    SenderInfo,
    SenderReport,
    decode_compound,
    encode_compound,
    is_rtcp,
    ntp_middle,
    ntp_timestamp,
)

BLOCK = ReportBlock(0x11223344, 25, 7, 0x0001_0203, 85, 0xAABBCCDD, 65536)
CASES: list[SenderReport | ReceiverReport] = [
    ReceiverReport(1),
    ReceiverReport(0xFFFFFFFF, (BLOCK,)),
    SenderReport(42, SenderInfo(ntp_timestamp(1_700_000_000.5), 160, 10, 1600)),
    SenderReport(42, SenderInfo(1, 2, 3, 4), (BLOCK, ReportBlock(9, 0, -3, 0, 0, 0, 0))),
]


@pytest.mark.parametrize("report", CASES)
def test_each_report_round_trips_with_its_cname(report: SenderReport | ReceiverReport) -> None:
    data = encode_compound(report, "bridge@gw.test")
    assert len(data) % 4 == 0
    assert is_rtcp(data)
    assert decode_compound(data) == RtcpCompound((report,), other=1)  # SDES counted as other


def test_a_hand_built_sender_report_decodes_to_its_fields() -> None:
    # V=2 P=0 RC=1, PT=200, length 12 words; SSRC; NTP; RTP ts; packets; octets; one block.
    data = bytes.fromhex(
        "81c8000c" "0000abcd" "e8f1a2b3" "80000000" "00001f40" "00000064" "00003e80"
        "00001234" "0a00000f" "0001ffff" "00000020" "a2b38000" "00008000"
    )  # fmt: skip
    (report,) = decode_compound(data).reports
    assert isinstance(report, SenderReport)
    assert report.ssrc == 0xABCD
    assert report.info == SenderInfo(0xE8F1A2B3_80000000, 8000, 100, 16000)
    assert report.blocks == (ReportBlock(0x1234, 10, 15, 0x1FFFF, 32, 0xA2B38000, 0x8000),)
    assert ntp_middle(report.info.ntp) == 0xA2B38000


def test_negative_cumulative_loss_is_sign_extended() -> None:
    block = ReportBlock(5, 0, -1, 0, 0, 0, 0)
    data = encode_compound(ReceiverReport(1, (block,)), "x")
    assert decode_compound(data).reports[0].blocks == (block,)


def test_every_prefix_decodes_or_raises_the_decode_error() -> None:
    data = encode_compound(CASES[3], "bridge@gw.test")
    for end in range(len(data)):
        try:
            decode_compound(data[:end])
        except RtcpDecodeError:
            continue


def test_trailing_bytes_that_are_not_a_whole_packet_are_refused() -> None:
    data = encode_compound(CASES[1], "c")
    with pytest.raises(RtcpDecodeError) as error:
        decode_compound(data + b"\x80")
    assert error.value.reason is RtcpDropReason.BAD_LENGTH


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\xc9", RtcpDropReason.TOO_SHORT),
        (b"\x40\xc9\x00\x01" + bytes(4), RtcpDropReason.BAD_VERSION),
        (b"\x81\xca\x00\x01" + bytes(4), RtcpDropReason.NOT_REPORT_FIRST),  # SDES first
        (b"\x80\xc9\x00\x05" + bytes(4), RtcpDropReason.BAD_LENGTH),  # says 24 bytes, has 8
        (b"\x81\xc9\x00\x01" + bytes(4), RtcpDropReason.BAD_REPORT_COUNT),  # RC=1, no block
        (b"\x80\xc8\x00\x01" + bytes(4), RtcpDropReason.BAD_LENGTH),  # SR without sender info
        (b"\xa0\xc9\x00\x01" + bytes(3) + b"\x09", RtcpDropReason.BAD_PADDING),
        (b"\xa0\xc9\x00\x01" + bytes(4), RtcpDropReason.BAD_PADDING),  # padding count 0
        (bytes(MAX_COMPOUND_BYTES + 1), RtcpDropReason.TOO_LARGE),
        (b"\x80\xc9\x00\x01" + bytes(4) * 1 + b"\x80\xcb\x00\x00" * MAX_COMPOUND_PACKETS,
         RtcpDropReason.TOO_MANY_PACKETS),
    ],
)  # fmt: skip
def test_garbage_is_refused_with_its_reason(data: bytes, reason: RtcpDropReason) -> None:
    with pytest.raises(RtcpDecodeError) as error:
        decode_compound(data)
    assert error.value.reason is reason
    assert data.hex() not in str(error.value)


def test_padding_on_the_last_packet_is_skipped() -> None:
    rr = struct.pack("!BBHI", 0xA0, 201, 2, 7) + b"\x00\x00\x00\x04"  # 4 padding bytes
    assert decode_compound(rr).reports == (ReceiverReport(7),)


def test_is_rtcp_separates_rtp_payload_types_from_rtcp_types() -> None:
    assert is_rtcp(b"\x80\xc8") and is_rtcp(b"\x80\xdf")
    for payload_type in (0, 8, 9, 101, 111, 127):
        assert not is_rtcp(bytes([0x80, payload_type]))
        assert not is_rtcp(bytes([0x80, 0x80 | payload_type])) or 64 <= payload_type <= 95
    assert not is_rtcp(b"\x80")


def test_ntp_timestamp_counts_from_1900() -> None:
    assert ntp_timestamp(0.0) >> 32 == 2_208_988_800
    assert ntp_timestamp(0.5) & 0xFFFFFFFF == 1 << 31


def test_more_than_31_blocks_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode_compound(ReceiverReport(1, (BLOCK,) * 32), "c")


_u32 = st.integers(0, 0xFFFFFFFF)
_blocks = st.builds(
    ReportBlock, _u32, st.integers(0, 255), st.integers(-0x800000, 0x7FFFFF),
    _u32, _u32, _u32, _u32,
)  # fmt: skip
_reports = st.one_of(
    st.builds(ReceiverReport, _u32, st.lists(_blocks, max_size=31).map(tuple)),
    st.builds(
        SenderReport,
        _u32,
        st.builds(SenderInfo, st.integers(0, 2**64 - 1), _u32, _u32, _u32),
        st.lists(_blocks, max_size=31).map(tuple),
    ),
)


@given(_reports, st.text(max_size=40))
def test_any_report_round_trips(report: SenderReport | ReceiverReport, cname: str) -> None:
    data = encode_compound(report, cname[:40])
    if len(data) <= MAX_COMPOUND_BYTES:
        assert decode_compound(data).reports == (report,)


@given(st.binary(max_size=200))
def test_any_bytes_give_a_compound_or_the_decode_error(data: bytes) -> None:
    with contextlib.suppress(RtcpDecodeError):
        decode_compound(data)


@given(st.binary(min_size=4, max_size=120))
def test_bytes_behind_a_valid_header_never_raise_anything_else(tail: bytes) -> None:
    with contextlib.suppress(RtcpDecodeError):
        decode_compound(b"\x81\xc8" + tail)

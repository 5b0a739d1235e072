"""The phone leg's RTCP session in virtual time: schedule, SR/RR contents, the phone's view, RTT."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from p2pnode.gateways.sip.bridge_rtcp import (
    REPORT_INTERVAL,
    ReceptionCounts,
    RtcpSession,
    SendingCounts,
)
from p2pnode.gateways.sip.rtcp import (
    ReceiverReport,
    ReportBlock,
    RtcpDropReason,
    SenderInfo,
    SenderReport,
    decode_compound,
    encode_compound,
    ntp_middle,
    ntp_timestamp,
)

BRIDGE, PHONE = 0xB0B0, 0xF0F0
WALL = 1_800_000_000.0  # Unix seconds at virtual time 0


def session(spread: Callable[[], float] = lambda: 1.0) -> RtcpSession:
    return RtcpSession(ssrc=BRIDGE, cname="bridge@gw", clock_rate=8000, start=0.0, spread=spread)


def reception(received: int, highest: int, first: int = 1000) -> ReceptionCounts:
    return ReceptionCounts(PHONE, first, highest, received, jitter=40.0)


def test_no_report_before_begin_and_begin_happens_once() -> None:
    core = RtcpSession(ssrc=BRIDGE, cname="c", clock_rate=8000)
    assert not core.started and core.next_deadline() == float("inf")
    core.begin(10.0)
    core.begin(20.0)
    assert core.next_deadline() == 12.5  # from the first begin


def test_first_report_after_half_the_interval_then_every_interval_with_spread() -> None:
    spreads = iter([1.0, 0.5, 1.5, 9.0])  # 9.0 is clamped to 1.5 (RFC 3550 §6.2 range)
    core = session(spread=lambda: next(spreads))
    assert core.next_deadline() == REPORT_INTERVAL / 2
    nothing = SendingCounts(0, 0, 0)
    empty = ReceptionCounts(None, 0, 0, 0, 0.0)
    core.report(2.5, WALL, nothing, empty)
    assert core.next_deadline() == pytest.approx(2.5 + 2.5)
    core.report(5.0, WALL, nothing, empty)
    assert core.next_deadline() == pytest.approx(5.0 + 7.5)
    core.report(12.5, WALL, nothing, empty)
    assert core.next_deadline() == pytest.approx(12.5 + 7.5)


def test_receiver_report_before_we_send_then_sender_report_with_our_counts() -> None:
    core = session()
    (rr,) = decode_compound(
        core.report(2.5, WALL, SendingCounts(0, 0, 0), reception(0, 999, 1000))
    ).reports
    assert isinstance(rr, ReceiverReport) and rr.ssrc == BRIDGE
    (sr,) = decode_compound(
        core.report(7.5, WALL + 7.5, SendingCounts(300, 48000, 123456), reception(300, 1299))
    ).reports
    assert isinstance(sr, SenderReport)
    assert sr.info == SenderInfo(ntp_timestamp(WALL + 7.5), 123456, 300, 48000)
    (block,) = sr.blocks
    assert block.ssrc == PHONE and block.highest_sequence == 1299
    assert block.cumulative_lost == 0 and block.jitter == 40


def test_loss_fraction_is_per_interval_and_cumulative_loss_grows() -> None:
    core = session()
    counts = SendingCounts(1, 160, 0)
    first = decode_compound(core.report(2.5, WALL, counts, reception(90, 1099))).reports[0]
    # 100 expected, 90 received: 10 % lost -> 25/256
    assert first.blocks[0].fraction_lost == 25 and first.blocks[0].cumulative_lost == 10
    second = decode_compound(core.report(7.5, WALL, counts, reception(190, 1199))).reports[0]
    assert second.blocks[0].fraction_lost == 0 and second.blocks[0].cumulative_lost == 10


def test_the_phone_s_report_gives_its_loss_jitter_and_the_round_trip() -> None:
    core = session()
    ours = decode_compound(
        core.report(2.5, WALL + 2.5, SendingCounts(100, 16000, 800), reception(100, 1099))
    ).reports[0]
    assert isinstance(ours, SenderReport)
    # The phone answers 0.030 s after our SR arrived; the path takes 0.020 s each way.
    lsr = ntp_middle(ours.info.ntp)
    block = ReportBlock(BRIDGE, 64, 12, 5000, 160, lsr, int(0.030 * 65536))
    phone_sr = SenderReport(PHONE, SenderInfo(ntp_timestamp(WALL + 9), 1, 250, 40000), (block,))
    arrival = 2.5 + 0.020 + 0.030 + 0.020
    assert core.receive(encode_compound(phone_sr, "phone"), arrival, WALL + arrival) is None
    stats = core.statistics()
    assert stats.round_trip_ms == pytest.approx(40.0, abs=0.1)
    assert stats.phone_fraction_lost == 0.25
    assert stats.phone_cumulative_lost == 12
    assert stats.phone_jitter_ms == pytest.approx(20.0)  # 160 units at 8 kHz
    assert stats.phone_packets_sent == 250
    assert stats.reports_received == 1 and stats.reports_sent == 1
    # Our next block echoes the phone's SR: LSR its middle bits, DLSR the time since.
    mine = decode_compound(
        core.report(7.5, WALL + 7.5, SendingCounts(300, 48000, 1), reception(300, 1299))
    ).reports[0]
    assert mine.blocks[0].lsr == ntp_middle(ntp_timestamp(WALL + 9))
    assert mine.blocks[0].dlsr == int((7.5 - arrival) * 65536)


def test_blocks_about_other_sources_and_forged_lsr_are_ignored() -> None:
    core = session()
    other = ReportBlock(0x1234, 128, 99, 0, 0, 0, 0)
    forged = ReportBlock(BRIDGE, 0, 0, 0, 0, 0xDEADBEEF, 0)  # an LSR we never sent
    data = encode_compound(ReceiverReport(PHONE, (other, forged)), "phone")
    assert core.receive(data, 3.0, WALL + 3.0) is None
    stats = core.statistics()
    assert stats.round_trip_ms is None
    assert stats.phone_cumulative_lost == 0


def test_garbage_is_counted_by_reason_and_changes_nothing() -> None:
    core = session()
    assert core.receive(b"\x80\xca\x00\x00", 1.0, WALL) is RtcpDropReason.NOT_REPORT_FIRST
    assert core.receive(b"\x80", 1.0, WALL) is RtcpDropReason.TOO_SHORT
    assert core.receive(b"\x80\xca\x00\x00", 1.0, WALL) is RtcpDropReason.NOT_REPORT_FIRST
    stats = core.statistics()
    assert dict(stats.dropped) == {
        RtcpDropReason.NOT_REPORT_FIRST: 2,
        RtcpDropReason.TOO_SHORT: 1,
    }
    assert stats.reports_received == 0 and stats.phone_fraction_lost is None

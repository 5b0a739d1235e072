"""RTCP on the phone leg: our reports every ~5 s, the phone's read into the call's statistics.

Sans-IO (RFC 3550 §6): the adapter (the leg, on the media clock) calls
:meth:`RtcpSession.report` when :meth:`RtcpSession.next_deadline` has come,
with snapshots of what we sent (:class:`SendingCounts`, from the phone leg's
sender) and what we received (:class:`ReceptionCounts`, from its receiver),
and feeds every RTCP datagram from the phone to :meth:`RtcpSession.receive`.

Why this shape: the counters already live in the leg's per-packet code, so
RTCP adds nothing per media packet; everything here runs once per report or
per RTCP datagram. Our report is an SR once we have sent audio (RR before),
with one block about the phone's stream (RFC 3550 A.3 loss, A.8 jitter,
LSR/DLSR of its last SR). The phone's blocks about our SSRC give its view of
our stream (loss, jitter) and the round trip (RFC 3550 §6.4.1: A - LSR - DLSR).

Time: ``now`` (the loop's monotonic clock) schedules and measures DLSR;
``wallclock`` (Unix seconds) only fills NTP timestamps, and the round trip
compares the phone's echo of our NTP timestamp with the wallclock at arrival.
The interval's random spread (RFC 3550 §6.2: 0.5-1.5) is a parameter.
Nothing a phone sends is kept beyond the latest values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pnode.gateways.sip.rtcp import (
    ReceiverReport,
    ReportBlock,
    RtcpDecodeError,
    RtcpDropReason,
    SenderInfo,
    SenderReport,
    decode_compound,
    encode_compound,
    ntp_middle,
    ntp_timestamp,
)

__all__ = [
    "MAX_ROUND_TRIP",
    "REPORT_INTERVAL",
    "ReceptionCounts",
    "RtcpSession",
    "RtcpStatistics",
    "SendingCounts",
]

REPORT_INTERVAL = 5.0  # RFC 3550 §6.2: the minimum interval for a two-party session
MAX_ROUND_TRIP = 60.0  # a larger "round trip" is a wrapped or forged LSR: ignored


@dataclass(frozen=True, slots=True)
class SendingCounts:
    """What we sent the phone so far (RFC 3550 §6.4.1 sender info)."""

    packets: int
    octets: int  # payload octets
    rtp_timestamp: int  # our stream's RTP time at the report's ``now``


@dataclass(frozen=True, slots=True)
class ReceptionCounts:
    """What we received of the phone's stream; ``ssrc`` None before its first packet."""

    ssrc: int | None
    first_sequence: int  # extended
    highest_sequence: int  # extended (RFC 3550 A.1)
    received: int
    jitter: float  # RFC 3550 A.8, timestamp units


@dataclass(frozen=True, slots=True)
class RtcpStatistics:
    """Our reports and the phone's, for the call's summary.

    ``phone_*`` are the phone's latest report about our stream (None before
    one arrived); ``round_trip_ms`` the latest measured round trip.
    """

    reports_sent: int
    reports_received: int
    round_trip_ms: float | None
    phone_fraction_lost: float | None  # 0..1, over its last interval
    phone_cumulative_lost: int | None
    phone_jitter_ms: float | None
    phone_packets_sent: int | None  # from the phone's SR
    dropped: tuple[tuple[RtcpDropReason, int], ...]


class RtcpSession:
    """One phone leg's RTCP: our SSRC and CNAME, the report timer, the phone's latest report."""

    def __init__(
        self,
        *,
        ssrc: int,
        cname: str,
        clock_rate: int,
        start: float | None = None,
        interval: float = REPORT_INTERVAL,
        spread: Callable[[], float] = lambda: 1.0,
    ) -> None:
        if interval <= 0 or clock_rate <= 0:
            raise ValueError("interval and clock_rate must be positive")
        self._ssrc = ssrc & 0xFFFFFFFF
        self._cname = cname
        self._clock_rate = clock_rate
        self._interval = interval
        self._spread = spread
        self._deadline = float("inf")
        if start is not None:
            self.begin(start)
        self._sent = 0
        self._received = 0
        self._last_sr: int = 0  # LSR: middle 32 bits of the phone's last SR
        self._last_sr_at: float | None = None
        self._prior_expected = 0  # RFC 3550 A.3, at our previous report
        self._prior_received = 0
        self._round_trip: float | None = None
        self._phone: ReportBlock | None = None
        self._phone_packets: int | None = None
        self._dropped = {reason: 0 for reason in RtcpDropReason}

    def _factor(self) -> float:
        return min(max(self._spread(), 0.5), 1.5)

    @property
    def started(self) -> bool:
        return self._deadline != float("inf")

    def begin(self, now: float) -> None:
        """Start reporting (RFC 3550 §6.2: the first report after half the interval).

        The leg begins when its first audio went to the phone, so our first
        report is an SR whose timestamp the phone's next report echoes (LSR).
        """
        if not self.started:
            self._deadline = now + self._interval / 2 * self._factor()

    def next_deadline(self) -> float:
        """When :meth:`report` is due (infinity before :meth:`begin`)."""
        return self._deadline

    def receive(self, data: bytes, now: float, wallclock: float) -> RtcpDropReason | None:
        """One RTCP datagram from the phone; the drop reason if it was refused."""
        try:
            compound = decode_compound(data)
        except RtcpDecodeError as error:
            self._dropped[error.reason] += 1
            return error.reason
        self._received += 1
        arrival = ntp_middle(ntp_timestamp(wallclock))
        for report in compound.reports:
            if isinstance(report, SenderReport):
                self._last_sr = ntp_middle(report.info.ntp)
                self._last_sr_at = now
                self._phone_packets = report.info.packet_count
            for block in report.blocks:
                if block.ssrc != self._ssrc:
                    continue  # about another source (a conference): not our stream
                self._phone = block
                if block.lsr:
                    seconds = ((arrival - block.lsr - block.dlsr) & 0xFFFFFFFF) / 65536
                    if seconds <= MAX_ROUND_TRIP:
                        self._round_trip = seconds
        return None

    def report(
        self, now: float, wallclock: float, sending: SendingCounts, reception: ReceptionCounts
    ) -> bytes:
        """Our compound (SR or RR, one block, SDES CNAME); the next report is scheduled."""
        blocks: tuple[ReportBlock, ...] = ()
        if reception.ssrc is not None:
            blocks = (self._block(now, reception),)
        if sending.packets:
            info = SenderInfo(
                ntp_timestamp(wallclock), sending.rtp_timestamp, sending.packets, sending.octets
            )
            report: SenderReport | ReceiverReport = SenderReport(self._ssrc, info, blocks)
        else:
            report = ReceiverReport(self._ssrc, blocks)
        self._sent += 1
        self._deadline = max(self._deadline, now) + self._interval * self._factor()
        return encode_compound(report, self._cname)

    def _block(self, now: float, reception: ReceptionCounts) -> ReportBlock:
        assert reception.ssrc is not None
        # RFC 3550 A.3: expected from the sequence range; lost may go negative (duplicates).
        expected = reception.highest_sequence - reception.first_sequence + 1
        lost = max(min(expected - reception.received, 0x7FFFFF), -0x800000)
        interval_expected = expected - self._prior_expected
        interval_lost = interval_expected - (reception.received - self._prior_received)
        self._prior_expected, self._prior_received = expected, reception.received
        fraction = 0
        if interval_expected > 0 and interval_lost > 0:
            fraction = min((interval_lost << 8) // interval_expected, 255)
        dlsr = 0
        if self._last_sr_at is not None:
            dlsr = int((now - self._last_sr_at) * 65536)
        return ReportBlock(
            ssrc=reception.ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_sequence=reception.highest_sequence & 0xFFFFFFFF,
            jitter=int(reception.jitter),
            lsr=self._last_sr,
            dlsr=dlsr,
        )

    def statistics(self) -> RtcpStatistics:
        phone = self._phone
        return RtcpStatistics(
            reports_sent=self._sent,
            reports_received=self._received,
            round_trip_ms=None if self._round_trip is None else self._round_trip * 1000,
            phone_fraction_lost=None if phone is None else phone.fraction_lost / 256,
            phone_cumulative_lost=None if phone is None else phone.cumulative_lost,
            phone_jitter_ms=None if phone is None else phone.jitter * 1000 / self._clock_rate,
            phone_packets_sent=self._phone_packets,
            dropped=tuple((reason, count) for reason, count in self._dropped.items() if count),
        )

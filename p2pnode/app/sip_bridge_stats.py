"""What the ``sip-bridge`` service reports: its events, statistics and Prometheus families.

Split out of ``sip_bridge`` (which builds and runs the bridges) to keep each
module one concept: these are the frozen snapshots the control API
(``api_sip_bridge``), the event stream and ``metrics.NodeCollector`` read.
``Totals`` sums the bridges' counters; the service keeps the retired bridges'
final counts in one, so the Prometheus counters stay monotonic across the
service's restarts.

Calls in progress (:class:`LiveCall`, from each bridge UA's open phone legs):
their RTCP path (rtcp-mux, a separate port, none) and the figures of their
RTCP session (round trip, the phone's view of our stream). Metrics carry no
per-call label: the live figures are gauge histograms over the calls in
progress, the report counts counters (ended calls' plus live ones').
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from p2pnode.gateways.sip.bridge import (
    BridgedCallSummary,
    BridgeDirection,
    BridgeMode,
    BridgeStatistics,
)
from p2pnode.gateways.sip.bridge_chat import ChatBridgeStatistics
from p2pnode.gateways.sip.bridge_routing import BridgeCallers
from p2pnode.gateways.sip.bridge_rtcp import RtcpStatistics
from p2pnode.gateways.sip.bridge_tracks import PhoneRtpLeg
from p2pnode.gateways.sip.bridge_ua import BridgeUserAgent

__all__ = [
    "JITTER_BUCKETS",
    "LOSS_BUCKETS",
    "ROUND_TRIP_BUCKETS",
    "TEXT_COUNTS",
    "BridgeSnapshot",
    "BridgedCall",
    "LiveCall",
    "RtcpPath",
    "SipBridgeEvent",
    "SipBridgeStatistics",
    "Totals",
    "bridge_metrics",
    "live_calls",
    "rtcp_metrics",
]

TEXT_COUNTS = ("to-chat", "to-phones", "refused", "failed")  # the texts metric's labels
# Gauge-histogram bounds over the calls in progress (seconds; fraction 0..1).
ROUND_TRIP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
JITTER_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)
LOSS_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)


class RtcpPath(enum.Enum):
    """How a phone leg's RTCP travels."""

    MUX = "mux"  # RFC 5761: on the RTP port
    SEPARATE = "separate"  # its own port (RFC 3605 a=rtcp, else RTP + 1)
    NONE = "none"  # not settled yet (ringing) or no RTCP address


@dataclass(frozen=True)
class LiveCall:
    """One phone leg in progress: its codec, RTCP path and RTCP figures (None: no session).

    ``call_id``: the P2P call's (as on the call's events and its ended
    summary), None while the leg has no P2P call yet (the phone is ringing,
    or the peer is being dialled).
    """

    bridge: str
    phone_codec: str
    rtcp_path: RtcpPath
    packets_from_phone: int
    packets_to_phone: int
    rtcp: RtcpStatistics | None
    call_id: bytes | None = None


def live_calls(
    login: str, ua: BridgeUserAgent, calls_by_id: Mapping[bytes, PhoneRtpLeg] | None = None
) -> tuple[LiveCall, ...]:
    """The open phone legs of one bridge's UA (bounded by its calls in progress).

    ``calls_by_id`` (``SipP2pBridge.call_legs()``) names each leg's P2P call.
    """
    ids = {id(leg): call_id for call_id, leg in (calls_by_id or {}).items()}
    calls = []
    for leg in ua.legs.values():
        if leg.is_closed:
            continue
        rtcp = leg.rtcp
        if rtcp is None:
            path = RtcpPath.NONE
        else:
            path = RtcpPath.MUX if leg.rtcp_port is None else RtcpPath.SEPARATE
        calls.append(
            LiveCall(
                login,
                leg.codec.value,
                path,
                leg.receiver.received,
                leg.sender.sent,
                None if rtcp is None else rtcp.statistics(),
                ids.get(id(leg)),
            )
        )
    return tuple(calls)


@dataclass(frozen=True)
class SipBridgeEvent:
    """Event on the node's stream: one observation of one bridged call."""

    bridge: str  # the hosted login (or the bridge account: the gateway's identity)
    call_id: bytes
    what: str  # see ``BridgeEvent``
    detail: str
    summary: BridgedCallSummary | None


@dataclass(frozen=True)
class BridgedCall:
    """One ended bridged call (the newest ``MAX_RECENT_CALLS``)."""

    bridge: str
    call_id: bytes
    summary: BridgedCallSummary


@dataclass(frozen=True)
class BridgeSnapshot:
    """One running bridge: whose calls, as which P2P identity, reached how."""

    login: str
    callers: BridgeCallers
    peer_id: str
    homes: int  # homes its signalling is attached to (0: unreachable for P2P calls)
    statistics: BridgeStatistics


@dataclass(frozen=True)
class SipBridgeStatistics:
    """Totals since the node started (across restarts) and the running bridges."""

    account: str
    active_calls: int
    calls: tuple[tuple[BridgeDirection, BridgeMode, int], ...]
    refusals: tuple[tuple[str, int], ...]
    packets_from_phone: int
    packets_to_phone: int
    lost: int
    passthrough_frames: int
    transcoded_frames: int
    digits_from_phone: int
    digits_to_phone: int
    digits_dropped: int
    bridges: tuple[BridgeSnapshot, ...]
    recent: tuple[BridgedCall, ...]
    # Texts of the hosted identities (sip_bridge_chat): to-chat, to-phones, refused, failed.
    texts: tuple[tuple[str, int], ...] = ()
    texts_held: int = 0  # chat texts waiting for a phone now (on disk)
    live: tuple[LiveCall, ...] = ()  # phone legs in progress
    rtcp_sent: int = 0  # RTCP reports to phones: ended calls' and live ones'
    rtcp_received: int = 0


_TOTALS = (
    "packets_from_phone",
    "packets_to_phone",
    "lost",
    "passthrough_frames",
    "transcoded_frames",
    "digits_from_phone",
    "digits_to_phone",
    "digits_dropped",
)


class Totals:
    """Counters summed over bridges (the retired ones' final counts plus the live ones)."""

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()
        self.texts: Counter[str] = Counter()
        self.calls: Counter[tuple[BridgeDirection, BridgeMode]] = Counter()
        self.refusals: Counter[str] = Counter()
        self.rtcp: Counter[str] = Counter()  # "sent", "received" of ended calls

    def add_ended(self, summary: BridgedCallSummary) -> None:
        """One call's RTCP reports at its end (its live counts leave the sum then)."""
        self.rtcp["sent"] += summary.rtcp_sent
        self.rtcp["received"] += summary.rtcp_received

    def rtcp_totals(self, live: Sequence[LiveCall]) -> tuple[int, int]:
        """(sent, received): ended calls' plus the live calls' so far."""
        sessions = [call.rtcp for call in live if call.rtcp is not None]
        return (
            self.rtcp["sent"] + sum(s.reports_sent for s in sessions),
            self.rtcp["received"] + sum(s.reports_received for s in sessions),
        )

    def add(self, stats: BridgeStatistics) -> None:
        for name in _TOTALS:
            self.values[name] += getattr(stats, name)
        for direction, mode, count in stats.calls:
            self.calls[(direction, mode)] += count
        for reason, count in stats.refusals:
            self.refusals[reason] += count

    def add_texts(self, stats: ChatBridgeStatistics) -> None:
        self.texts["to-chat"] += stats.to_chat
        self.texts["to-phones"] += stats.to_phones
        self.texts["refused"] += stats.refused
        self.texts["failed"] += stats.failed

    def copy(self) -> Totals:
        other = Totals()
        other.values.update(self.values)
        other.texts.update(self.texts)
        other.calls.update(self.calls)
        other.refusals.update(self.refusals)
        other.rtcp.update(self.rtcp)
        return other


def bridge_metrics(stats: SipBridgeStatistics) -> Iterator[Metric]:
    """The bridge's Prometheus families (``metrics.NodeCollector`` yields them at scrape)."""
    calls = CounterMetricFamily(
        "p2pnode_sip_bridge_calls",
        "answered bridged calls that ended, by who started them and how audio crossed",
        labels=["direction", "mode"],
    )
    for direction in BridgeDirection:
        for mode in BridgeMode:  # every series from the first scrape: rate() needs a zero
            count = next((n for d, m, n in stats.calls if d is direction and m is mode), 0)
            calls.add_metric([direction.value, mode.value], count)
    yield calls
    active = GaugeMetricFamily("p2pnode_sip_bridge_active_calls", "bridged calls in progress")
    active.add_metric([], stats.active_calls)
    yield active
    refusals = CounterMetricFamily(
        "p2pnode_sip_bridge_refusals",
        "calls the bridge did not connect, by reason (foreign-*, not-found, peer-*, phone-*)",
        labels=["reason"],
    )
    for reason, count in stats.refusals:
        refusals.add_metric([reason], count)
    yield refusals
    frames = CounterMetricFamily(
        "p2pnode_sip_bridge_frames",
        "phone audio frames into the P2P leg: payload untouched or decoded",
        labels=["mode"],
    )
    frames.add_metric([BridgeMode.PASSTHROUGH.value], stats.passthrough_frames)
    frames.add_metric([BridgeMode.TRANSCODED.value], stats.transcoded_frames)
    yield frames
    packets = CounterMetricFamily(
        "p2pnode_sip_bridge_rtp_packets",
        "RTP packets on the phone leg of ended calls (lost: missing at the jitter buffer)",
        labels=["what"],
    )
    packets.add_metric(["from-phone"], stats.packets_from_phone)
    packets.add_metric(["to-phone"], stats.packets_to_phone)
    packets.add_metric(["lost"], stats.lost)
    yield packets
    digits = CounterMetricFamily(
        "p2pnode_sip_bridge_digits", "RFC 4733 digits carried or dropped", labels=["what"]
    )
    digits.add_metric(["from-phone"], stats.digits_from_phone)
    digits.add_metric(["to-phone"], stats.digits_to_phone)
    digits.add_metric(["dropped"], stats.digits_dropped)
    yield digits
    texts = CounterMetricFamily(
        "p2pnode_sip_bridge_texts",
        "texts of the hosted identities: MESSAGEs into chat, chat texts taken by a phone, "
        "refused (not found, bad body), failed (not sent now, not held)",
        labels=["what"],
    )
    for what, count in stats.texts:
        texts.add_metric([what], count)
    yield texts
    waiting = GaugeMetricFamily(
        "p2pnode_sip_bridge_texts_held", "chat texts held on disk until a phone registers"
    )
    waiting.add_metric([], stats.texts_held)
    yield waiting
    yield from rtcp_metrics(stats)


def _gauge_histogram(
    name: str, documentation: str, bounds: Sequence[float], values: Sequence[float]
) -> Metric:
    """Where the calls in progress stand now (cumulative buckets, no per-call label)."""
    buckets = [(repr(float(bound)), float(sum(v <= bound for v in values))) for bound in bounds]
    buckets.append(("+Inf", float(len(values))))
    return GaugeHistogramMetricFamily(name, documentation, buckets, gsum_value=sum(values))


def rtcp_metrics(stats: SipBridgeStatistics) -> Iterator[Metric]:
    """RTCP of the phone legs: reports counted, the live calls' figures as gauge histograms."""
    reports = CounterMetricFamily(
        "p2pnode_sip_bridge_rtcp_reports",
        "RTCP compounds on the phone legs: sent to phones, received from them",
        labels=["what"],
    )
    reports.add_metric(["sent"], stats.rtcp_sent)
    reports.add_metric(["received"], stats.rtcp_received)
    yield reports
    paths = GaugeMetricFamily(
        "p2pnode_sip_bridge_rtcp_calls",
        "phone legs in progress by RTCP path (mux, separate port, none)",
        labels=["path"],
    )
    for path in RtcpPath:
        paths.add_metric([path.value], sum(call.rtcp_path is path for call in stats.live))
    yield paths
    sessions = [call.rtcp for call in stats.live if call.rtcp is not None]
    yield _gauge_histogram(
        "p2pnode_sip_bridge_round_trip_seconds",
        "RTCP round trip to the phone (RFC 3550 6.4.1) of the calls in progress that measured one",
        ROUND_TRIP_BUCKETS,
        [s.round_trip_ms / 1000 for s in sessions if s.round_trip_ms is not None],
    )
    yield _gauge_histogram(
        "p2pnode_sip_bridge_phone_jitter_seconds",
        "interarrival jitter of our stream as the phone reports it, calls in progress",
        JITTER_BUCKETS,
        [s.phone_jitter_ms / 1000 for s in sessions if s.phone_jitter_ms is not None],
    )
    yield _gauge_histogram(
        "p2pnode_sip_bridge_phone_fraction_lost",
        "fraction of our packets the phone lost over its last report interval, calls in progress",
        LOSS_BUCKETS,
        [s.phone_fraction_lost for s in sessions if s.phone_fraction_lost is not None],
    )

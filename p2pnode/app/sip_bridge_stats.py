"""What the ``sip-bridge`` service reports: its events, statistics and Prometheus families.

Split out of ``sip_bridge`` (which builds and runs the bridges) to keep each
module one concept: these are the frozen snapshots the control API
(``api_sip_bridge``), the event stream and ``metrics.NodeCollector`` read.
``Totals`` sums the bridges' counters; the service keeps the retired bridges'
final counts in one, so the Prometheus counters stay monotonic across the
service's restarts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from p2pnode.gateways.sip.bridge import (
    BridgedCallSummary,
    BridgeDirection,
    BridgeMode,
    BridgeStatistics,
)
from p2pnode.gateways.sip.bridge_chat import ChatBridgeStatistics
from p2pnode.gateways.sip.bridge_routing import BridgeCallers

__all__ = [
    "TEXT_COUNTS",
    "BridgeSnapshot",
    "BridgedCall",
    "SipBridgeEvent",
    "SipBridgeStatistics",
    "Totals",
    "bridge_metrics",
]

TEXT_COUNTS = ("to-chat", "to-phones", "refused", "failed")  # the texts metric's labels


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

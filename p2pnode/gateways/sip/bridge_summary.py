"""What a bridged call carried, as the API, the metrics and the ``ended`` event read it.

The bridge (``bridge.py``) produces these values; ``app/sip_bridge_stats.py``,
``/api/sip/bridge`` and the CLI consume them. They live apart from the bridge's
call handling so readers need not import the machinery that makes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "BridgeDirection",
    "BridgeEvent",
    "BridgeMode",
    "BridgeStatistics",
    "BridgedCallSummary",
    "ended_detail",
]


class BridgeDirection(enum.Enum):
    """Which side started a bridged call."""

    TO_PHONE = "to-phone"  # a P2P peer called a hosted identity: its phones rang
    FROM_PHONE = "from-phone"  # a phone or another SIP network dialled a P2P login


class BridgeMode(enum.Enum):
    """How the phone's audio crossed: payload bytes unchanged, or decoded and re-encoded."""

    PASSTHROUGH = "passthrough"
    TRANSCODED = "transcoded"


@dataclass(frozen=True, slots=True)
class BridgedCallSummary:
    """What one bridged call carried, taken at its end (``ended`` event, API, metrics)."""

    direction: BridgeDirection
    peer: str  # the P2P peer id on the other leg
    phone_codec: str  # the phone leg's codec (PCMU, PCMA, G722, opus)
    webrtc_codec: str  # the P2P leg's negotiated codec, "" if it never flowed
    mode: BridgeMode
    seconds: float  # answered -> ended
    packets_from_phone: int
    lost: int  # phone packets missing at the jitter buffer
    jitter_ms: float  # RFC 3550 A.8 interarrival jitter of the phone's stream
    packets_to_phone: int
    frames_from_peer: int
    passthrough_frames: int
    transcoded_frames: int
    dropped: tuple[tuple[str, int], ...]  # phone packets dropped, by reason
    peer_passthrough_frames: int = 0  # the peer's packets sent to the phone untouched
    direct_frames: int = 0  # phone -> peer frames sent by DirectRtp (not aiortc's sender task)
    # RTCP on the phone leg (muxed or on its own port): our reports, the phone's, and what it said.
    rtcp_sent: int = 0
    rtcp_received: int = 0
    round_trip_ms: float | None = None
    phone_reported_lost: int | None = None  # cumulative, of our stream
    phone_reported_jitter_ms: float | None = None


@dataclass(frozen=True, slots=True)
class BridgeEvent:
    """One per-call observation for the control API and metrics.

    ``what``: ``ringing-phones``, ``phone-answered``, ``phone-refused``,
    ``dialling-peer``, ``peer-answered``, ``peer-refused``, ``digit``,
    ``digit-to-phone``, ``hold``, ``resume``, ``failed``, ``ended`` (with
    ``summary``; ``detail`` keeps the same numbers as ``key=value`` text).
    """

    call_id: bytes
    what: str
    detail: str = ""
    summary: BridgedCallSummary | None = None


@dataclass(frozen=True, slots=True)
class BridgeStatistics:
    """Counters of one bridge since it was built (monotonic, except ``active_calls``)."""

    active_calls: int
    calls: tuple[tuple[BridgeDirection, BridgeMode, int], ...]  # ended answered calls
    refusals: tuple[tuple[str, int], ...]  # by reason: calls the bridge did not connect
    packets_from_phone: int
    packets_to_phone: int
    lost: int
    passthrough_frames: int
    transcoded_frames: int
    digits_from_phone: int
    digits_to_phone: int
    digits_dropped: int
    events_dropped: int


def ended_detail(summary: BridgedCallSummary) -> str:
    """The ``ended`` event's numbers as ``key=value`` text (logs, older readers)."""
    return (
        f"received={summary.packets_from_phone} lost={summary.lost} "
        f"jitter_ms={summary.jitter_ms:.1f} to_phone={summary.packets_to_phone} "
        + "".join(f"dropped_{reason}={count} " for reason, count in summary.dropped)
        + f"from_peer={summary.frames_from_peer} passthrough={summary.passthrough_frames} "
        f"direct={summary.direct_frames} peer_passthrough={summary.peer_passthrough_frames} "
        f"transcoded={summary.transcoded_frames}" + _rtcp_detail(summary)
    )


def _rtcp_detail(summary: BridgedCallSummary) -> str:
    if not (summary.rtcp_sent or summary.rtcp_received):
        return ""
    out = f" rtcp_sent={summary.rtcp_sent} rtcp_received={summary.rtcp_received}"
    if summary.round_trip_ms is not None:
        out += f" rtt_ms={summary.round_trip_ms:.1f}"
    if summary.phone_reported_lost is not None:
        out += f" phone_lost={summary.phone_reported_lost}"
    if summary.phone_reported_jitter_ms is not None:
        out += f" phone_jitter_ms={summary.phone_reported_jitter_ms:.1f}"
    return out

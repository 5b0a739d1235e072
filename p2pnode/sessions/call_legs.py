"""What one call is made of, apart from the service that drives it.

A ``CallSession`` holds one call's state across its media generations; a
``MediaLeg`` is one generation (one ``RTCPeerConnection`` and what it received);
the tables translate signals to machine events and machine actions to signals.
They live here so ``calls.py`` stays the service itself; no subclass of
``CallService`` needs them (the bridge and the app use its public options).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription

from p2pnode.sessions.call import Call, CallAction, CallEvent
from p2pnode.sessions.call_config import CallMedia, MediaPath
from p2pnode.sessions.call_signal import DeclineReason, RelayedCaller, SignalKind
from p2pnode.sessions.media import VideoProbe, WavRecorder

if TYPE_CHECKING:
    from p2pnode.sessions.call_sdp import HeldReoffer

__all__ = [
    "DECLINE_EVENTS",
    "DECLINE_REASONS",
    "REMOTE_EVENTS",
    "SEND_KINDS",
    "CallSession",
    "MediaLeg",
    "SignalDrops",
    "first_codec",
    "path_kind",
]

logger = logging.getLogger("p2pnode.sessions.calls")

_LOG_INTERVAL = 60.0


class SignalDrops:
    """Counts dropped signals by reason; logs each reason at most once per interval."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def drop(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged.get(reason, -_LOG_INTERVAL) >= _LOG_INTERVAL:
            self._logged[reason] = now
            logger.info("dropped call signal: %s", reason)


class MediaLeg:
    """One media generation: a peer connection and what it received.

    ``pc`` is None for a call whose connection an ``SdpSource``'s endpoint holds.
    """

    def __init__(self, generation: int, path: MediaPath, pc: RTCPeerConnection | None) -> None:
        self.generation = generation
        self.path = path
        self.pc = pc
        self.started = time.monotonic()
        self.answered = False
        self.last_frame_at: float | None = None
        self.closing = False
        self.receivers: list[asyncio.Task[None]] = []
        self.session: CallSession | None = None  # None while a warm leg waits for a call
        self.offer_sdp: str | None = None  # a warm offer leg's gathered offer


class CallSession:
    def __init__(self, call_id: bytes, peer: str, call: Call, media: CallMedia) -> None:
        self.call_id = call_id
        self.peer = peer
        self.call = call
        self.media = media
        self.local_sdp: str | None = None  # our offer, sent with the invite
        self.remote_sdp: str | None = None  # the latest offer or answer from the peer
        self.leg: MediaLeg | None = None
        self.pending: MediaLeg | None = None  # a re-offer waiting for its answer
        self.generation = 0
        self.failovers = 0
        self.recorder: WavRecorder | None = None  # opened at the first frame
        self.video = VideoProbe()
        self.frames = 0
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        self.held: HeldReoffer | None = None  # a peer's re-offer waiting for an SdpSource
        self.dtmf_sent = 0  # the next DTMF sequence number we send
        self.dtmf_heard = 0  # the next DTMF sequence number we report
        self.relayed_caller: RelayedCaller | None = None  # a gateway peer's caller
        self.codec: str | None = None
        self.ended = asyncio.Event()
        self.heard = asyncio.Event()  # set at the first received audio frame


REMOTE_EVENTS: dict[SignalKind, CallEvent] = {
    SignalKind.RINGING: CallEvent.REMOTE_RINGING,
    SignalKind.ANSWER: CallEvent.REMOTE_ANSWER,
    SignalKind.BUSY: CallEvent.REMOTE_BUSY,
    SignalKind.CANCEL: CallEvent.REMOTE_CANCEL,
    SignalKind.HANGUP: CallEvent.REMOTE_HANGUP,
    SignalKind.REOFFER: CallEvent.REMOTE_REOFFER,
    SignalKind.REANSWER: CallEvent.REMOTE_REANSWER,
}
DECLINE_EVENTS = {
    DeclineReason.DECLINED: CallEvent.REMOTE_DECLINE,
    DeclineReason.NO_ANSWER: CallEvent.REMOTE_NO_ANSWER,
    DeclineReason.REFUSED: CallEvent.REMOTE_REFUSED,
}
SEND_KINDS: dict[CallAction, SignalKind] = {
    CallAction.SEND_RINGING: SignalKind.RINGING,
    CallAction.SEND_DECLINE: SignalKind.DECLINE,
    CallAction.SEND_NO_ANSWER: SignalKind.DECLINE,
    CallAction.SEND_REFUSED: SignalKind.DECLINE,
    CallAction.SEND_BUSY: SignalKind.BUSY,
    CallAction.SEND_CANCEL: SignalKind.CANCEL,
    CallAction.SEND_HANGUP: SignalKind.HANGUP,
}
DECLINE_REASONS = {
    CallAction.SEND_DECLINE: DeclineReason.DECLINED,
    CallAction.SEND_NO_ANSWER: DeclineReason.NO_ANSWER,
    CallAction.SEND_REFUSED: DeclineReason.REFUSED,
}


def first_codec(sdp: str) -> str | None:
    """The negotiated audio codec: the first one in the answer's audio section.

    The SDP may be a peer's (or a page's) input: whatever it holds gives a codec or None.
    """
    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError, AssertionError):  # aiortc asserts on bad m= lines
        return None
    for media in description.media:
        if media.kind == "audio" and media.rtp.codecs:
            name: str = media.rtp.codecs[0].mimeType
            return name
    return None


def path_kind(leg: MediaLeg | None) -> str | None:
    """How media flows: 'relay' when either end of the nominated pair is a relayed
    candidate (one relay carries it), else 'direct'; with the pair's candidate types
    and the path's name, e.g. 'relay (host->relay) via relay1'. None before nomination.
    """
    if leg is None or leg.pc is None:
        return None
    for transceiver in leg.pc.getTransceivers():
        transport = transceiver.sender.transport
        ice = getattr(getattr(transport, "transport", None), "_connection", None)
        nominated = getattr(ice, "_nominated", None)  # aioice keeps no public accessor
        if isinstance(nominated, dict) and nominated:
            pair = next(iter(nominated.values()))
            local: str = pair.local_candidate.type
            remote: str = pair.remote_candidate.type
            kind = "relay" if "relay" in (local, remote) else "direct"
            return f"{kind} ({local}->{remote}) via {leg.path.name}"
    return None

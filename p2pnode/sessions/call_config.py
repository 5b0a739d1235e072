"""What a call is configured with and what it reports: paths, media, policy, updates.

Why a module: the runtime, the CLI and the SIP gateway build these without
pulling in the service; every value here is a frozen dataclass or an enum.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from p2pnode.connectivity.ice_servers import IcePlan
from p2pnode.sessions.call import CallDirection, CallState, CallTimers
from p2pnode.sessions.media import AudioSource, CallAudio, SilenceSource

if TYPE_CHECKING:
    from p2pnode.sessions.call_sdp import SdpSource

__all__ = [
    "CallConfig",
    "CallMedia",
    "CallStatistics",
    "CallUpdate",
    "IceServer",
    "MediaPath",
    "NonContactPolicy",
    "answer_codec_order",
]


@dataclass(frozen=True, slots=True)
class IceServer:
    url: str  # stun:host:port or turn:host:port?transport=udp
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class MediaPath:
    """One way to carry media: the servers ICE may use (one STUN, one TURN per aioice)."""

    servers: tuple[IceServer, ...] = ()
    relay_only: bool = False
    name: str = "direct"

    @classmethod
    def from_plan(cls, plan: IcePlan, *, relay_only: bool = False) -> MediaPath:
        """The path the connectivity layer chose (a home's STUN, the best relay's TURN)."""
        servers = tuple(
            IceServer(
                server.urls if isinstance(server.urls, str) else server.urls[0],
                server.username,
                server.credential,
            )
            for server in plan.rtc_servers()
        )
        return cls(servers, relay_only=relay_only, name=plan.relay_id or "direct")


class NonContactPolicy(enum.Enum):
    RING = "ring"
    REQUEST = "request"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class CallConfig:
    paths: tuple[MediaPath, ...] = (MediaPath(),)  # [0] first; the rest are failover paths
    audio_codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA")  # in order of preference
    timers: CallTimers = field(default_factory=CallTimers)
    non_contacts: NonContactPolicy = NonContactPolicy.RING
    auto_answer: bool = False
    silence_after: float = 1.0  # a live call this long without a frame fails over
    connect_grace: float = 6.0  # a new connection may take this long to bring a frame
    reoffer_timeout: float = 4.0
    max_failovers: int = 6
    max_calls: int = 8
    warm: bool = False  # keep one offer and one answer connection gathered ahead of need
    tune_ice: bool = True  # connectivity.ice_tuning: no 500 ms stall on a first lost check


@dataclass(frozen=True, slots=True)
class CallMedia:
    """What one side sends and where it keeps what it hears.

    ``audio``: a binding that carries the call's audio itself (a SIP bridge's
    phone leg, see ``sessions.media.CallAudio``); ``source`` and ``record_to``
    are then unused for audio.

    ``sdp``: an endpoint outside the node holds the call's connection and makes
    every SDP (the app's page, see ``sessions.call_sdp.SdpSource``); the node
    then keeps no media for the call, and ``source``, ``record_to``, ``video``
    and ``audio`` are unused.

    ``audio_codecs``: this call's own codec order, best first (empty: the
    service's ``CallConfig.audio_codecs``). Dialling, the offer lists exactly
    these; answering, the answer lists those of them the offer has, or the
    offer's own when it has none (see :func:`answer_codec_order`). Why: a
    SIP bridge carries the phone's codec untouched only when the P2P leg
    negotiates that same codec, and that codec is per call.
    """

    source: AudioSource = field(default_factory=SilenceSource)
    record_to: Path | None = None
    video: bool = False
    audio: CallAudio | None = None
    sdp: SdpSource | None = None
    audio_codecs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """One reportable change: state, and once media flows, the codec and path.

    ``dtmf`` is set (state unchanged) on the update that reports one digit the
    peer keyed mid-call, in the order the peer sent them. ``relayed_caller``:
    the peer is a gateway and said who called on its side (a SIP From, say);
    ``detail`` then says whether the gateway verified it.
    """

    call_id: bytes
    peer: str
    direction: CallDirection
    state: CallState
    codec: str | None = None
    path: str | None = None
    detail: str = ""
    dtmf: str | None = None
    relayed_caller: str | None = None


@dataclass(frozen=True, slots=True)
class CallStatistics:
    frames: int
    first_frame_at: float | None
    last_frame_at: float | None
    generation: int
    failovers: int
    codec: str | None
    video_frames: int


def answer_codec_order(preferred: tuple[str, ...], offered: tuple[str, ...]) -> tuple[str, ...]:
    """The codecs an answer lists: the ``preferred`` ones the offer has, else the offer's.

    Only those (RFC 3264 §6.1 lets an answer list a subset of the offer's
    codecs, in its own order): an offerer sends with the first codec *of its
    own* preference that the answer lists (aiortc does), so an answer that
    still named the offer's favourite would get that one back. When the offer
    has none of ``preferred`` the answer keeps the offer's list and order.
    Names compare case-insensitively (``PCMU``, ``opus``); the offer's
    spelling is kept.
    """
    lowered = [name.lower() for name in offered]
    chosen = [offered[lowered.index(name.lower())] for name in preferred if name.lower() in lowered]
    return tuple(dict.fromkeys(chosen or offered))

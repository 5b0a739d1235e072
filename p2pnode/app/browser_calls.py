"""The browser leg: the app page's ``RTCPeerConnection`` is the call's media endpoint.

Why a subclass of ``CallService`` rather than a second service: the call machine,
glare, policy, timers and the sealed "call" channel stay exactly the ones CLI calls
use, so a page interoperates with an aiortc peer, another page or the SIP bridge by
construction. Only the SDP changes hands: for a ``BrowserMedia`` call the offer or
answer is the page's own (non-trickle: it waits for ICE gathering, so the one SDP
holds every candidate) and the node signs and seals it as the call's SDP. The page's
DTLS fingerprint travels inside that SDP, so it is bound to our identity exactly as
aiortc's is. The node keeps no media for such a call: the aiortc connection a leg
holds is never given a description, and the node never hears frames, so its silence
watch is off for browser calls.

Relay failover moves the media to a new connection (a new DTLS fingerprint), so
the page must make every new SDP itself; the node never answers with an SDP the
page made for an earlier connection:

- the peer re-offers (it heard silence on our relay): the REOFFER is held, not
  answered, and announced as a ``CallOffer`` with its generation; the page answers
  it with a fresh connection (``page_reanswer``) and only then does the call
  machine send the REANSWER, carrying that page's SDP;
- the page's own media fails (ICE failed, or no packet for a while): the page
  offers from a fresh connection (``page_reoffer``), the node sends it as a
  REOFFER, and the peer's REANSWER becomes the ``remote_sdp`` the page applies.

A page that takes longer than the peer's re-offer timeout is superseded by the
peer's next re-offer (its late answer is refused as stale).

The remote SDP a page needs (the answer to its offer, or an incoming offer) is read
from ``remote_sdp``; incoming offers are also announced as ``CallOffer`` events.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.sdp import SessionDescription

from p2pnode.connectivity.ice_servers import IcePlan
from p2pnode.sessions.call import CallEvent, CallState
from p2pnode.sessions.call_config import CallMedia
from p2pnode.sessions.call_legs import CallSession as _Session  # the overridable hooks' types
from p2pnode.sessions.call_legs import MediaLeg as _Leg
from p2pnode.sessions.call_signal import (
    MAX_SDP_BYTES,
    CallSignalDecodeError,
    SignalKind,
    decode_signal,
)
from p2pnode.sessions.calls import CallService

__all__ = [
    "MAX_BROWSER_SDP",
    "BrowserCallService",
    "BrowserMedia",
    "CallOffer",
    "PageIceServer",
    "StaleRenegotiationError",
    "page_ice_servers",
    "sdp_codec",
]

MAX_BROWSER_SDP = MAX_SDP_BYTES  # UTF-8 bytes, the call signal's bound; a page's is ~2-4 kB


@dataclass(frozen=True, slots=True)
class BrowserMedia(CallMedia):
    """The page is the endpoint: ``sdp`` is its offer (dial) or answer (answer)."""

    sdp: str = ""


@dataclass(frozen=True, slots=True)
class CallOffer:
    """Event: an incoming call's offer (``generation`` 0), or a live call's re-offer
    (> 0), for a page that will answer with its own, new connection."""

    call_id: str
    peer_id: str
    sdp: str
    generation: int = 0


class StaleRenegotiationError(Exception):
    """The page answered a re-offer that is no longer the one waiting (or none is)."""


@dataclass(frozen=True, slots=True)
class _HeldReoffer:
    peer: str
    generation: int
    sdp: str
    payload: bytes  # the signal as it came, replayed once the page has answered


@dataclass(frozen=True, slots=True)
class PageIceServer:
    """One entry of the page's ``RTCConfiguration.iceServers`` (W3C field names)."""

    urls: str
    username: str | None = None
    credential: str | None = None


def page_ice_servers(plan: IcePlan) -> tuple[PageIceServer, ...]:
    """The page's ICE servers: exactly the node's plan (our relay's STUN and TURN with the
    credentials it issued to this identity); empty means host candidates only. Never a
    public server: the page gets nothing the plan does not name."""
    return tuple(
        PageIceServer(
            server.urls if isinstance(server.urls, str) else server.urls[0],
            server.username,
            server.credential,
        )
        for server in plan.rtc_servers()
    )


def sdp_codec(sdp: str) -> str | None:
    """The first audio codec of an SDP (the negotiated one in an answer), for reports.

    The remote SDP is a peer's input: whatever it holds gives a codec or None."""
    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError, AssertionError):  # aiortc asserts on bad m= lines
        return None
    for media in description.media:
        if media.kind == "audio" and media.rtp.codecs:
            name: str = media.rtp.codecs[0].mimeType
            return name
    return None


def _browser(session: _Session) -> BrowserMedia | None:
    media = session.media
    return media if isinstance(media, BrowserMedia) else None


class BrowserCallService(CallService):
    """``CallService`` whose calls may carry a page's SDP instead of aiortc media."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: dict[bytes, _HeldReoffer] = {}  # one per call: the newest re-offer
        # told of every held re-offer (the node's event stream); set by the owner
        self.announce: Callable[[CallOffer], None] = lambda _offer: None

    async def handle_signal(self, peer: str, payload: bytes) -> None:
        """As ``CallService``, except a re-offer on a page's call waits for the page."""
        try:
            signal = decode_signal(payload)
        except CallSignalDecodeError:
            await super().handle_signal(peer, payload)  # dropped and counted there
            return
        for call_id in [c for c in self._held if self._sessions[c].call.ended]:
            del self._held[call_id]  # re-offers of calls that ended are never answered
        session = self._sessions.get(signal.call_id)
        if (
            signal.kind is not SignalKind.REOFFER
            or signal.sdp is None
            or session is None
            or session.peer != peer
            or _browser(session) is None
        ):
            await super().handle_signal(peer, payload)
            return
        held = self._held.get(signal.call_id)
        if signal.generation <= max(session.generation, held.generation if held else 0):
            self.drops.drop("stale reoffer")
            return
        if session.call.state is not CallState.ANSWERED:
            self.drops.drop(f"reoffer in state {session.call.state.value}")
            return
        self._held[signal.call_id] = _HeldReoffer(peer, signal.generation, signal.sdp, payload)
        self.announce(CallOffer(signal.call_id.hex(), peer, signal.sdp, signal.generation))

    def held_reoffer(self, call_id: bytes) -> CallOffer | None:
        """The peer's re-offer waiting for this page's new connection, if any."""
        held = self._held.get(call_id)
        if held is None:
            return None
        return CallOffer(call_id.hex(), held.peer, held.sdp, held.generation)

    async def page_reanswer(self, call_id: bytes, generation: int, sdp: str) -> None:
        """The page answered re-offer ``generation`` with a new connection: send it.

        ``StaleRenegotiationError`` when that re-offer is not the one waiting."""
        held = self._held.get(call_id)
        session = self._session(call_id)
        if held is None or held.generation != generation or session.call.ended:
            raise StaleRenegotiationError("no such re-offer waiting")
        del self._held[call_id]
        media = _browser(session)
        assert media is not None  # only a page's calls hold re-offers
        session.media = dataclasses.replace(media, sdp=sdp)
        await super().handle_signal(held.peer, held.payload)

    async def page_reoffer(self, call_id: bytes, sdp: str) -> int:
        """The page's media failed: offer ``sdp`` (a new connection's) to the peer.

        Returns the re-offer's generation; the peer's re-answer becomes ``remote_sdp``.
        A re-offer still unanswered is given up (only the newest can be answered)."""
        session = self._session(call_id)
        media = _browser(session)
        if media is None or session.call.state is not CallState.ANSWERED:
            raise StaleRenegotiationError("not a live call of this page")
        if session.pending is not None:
            self._close_leg(session.pending)
            session.pending = None
        session.media = dataclasses.replace(media, sdp=sdp)
        await self._apply(session, CallEvent.LOCAL_REOFFER)
        return session.generation

    def remote_sdp(self, call_id: bytes) -> str | None:
        """The peer's latest offer or answer for ``call_id`` (KeyError: no such call)."""
        return self._session(call_id).remote_sdp

    def is_browser(self, call_id: bytes) -> bool:
        return _browser(self._session(call_id)) is not None

    def _take_warm(self, role: str, session: _Session) -> _Leg | None:
        if _browser(session) is not None:
            return None  # a pre-gathered aiortc connection is for node-media calls
        return super()._take_warm(role, session)

    async def _make_offer(self, session: _Session, leg: _Leg) -> str:
        media = _browser(session)
        if media is None:
            return await super()._make_offer(session, leg)
        return media.sdp

    async def _make_answer(self, session: _Session, leg: _Leg) -> str:
        media = _browser(session)
        if media is None:
            return await super()._make_answer(session, leg)
        session.codec = sdp_codec(media.sdp)
        leg.answered = True
        return media.sdp

    async def _accept_answer(self, session: _Session, leg: _Leg) -> None:
        if _browser(session) is None:
            await super()._accept_answer(session, leg)
            return
        session.codec = sdp_codec(session.remote_sdp or "")
        leg.answered = True

    async def _watch_media(self, session: _Session, now: float) -> None:
        if _browser(session) is None:
            await super()._watch_media(session, now)

    async def _on_reanswer(self, session: _Session) -> None:
        if _browser(session) is None:
            await super()._on_reanswer(session)
            return
        pending = session.pending
        assert pending is not None
        # the page applies the re-answer to its own new connection (remote_sdp)
        old, session.leg, session.pending = session.leg, pending, None
        pending.answered = True
        pending.started = time.monotonic()
        session.codec = sdp_codec(session.remote_sdp or "")
        if old is not None:
            self._close_leg(old)

"""The browser leg: the app page's ``RTCPeerConnection`` is the call's media endpoint.

Why a subclass of ``CallService`` rather than a second service: the call machine,
glare, policy, timers and the sealed "call" channel stay exactly the ones CLI calls
use, so a page interoperates with an aiortc peer, another page or the SIP bridge by
construction. Only the SDP changes hands: for a ``BrowserMedia`` call the offer or
answer is the page's own (non-trickle: it waits for ICE gathering, so the one SDP
holds every candidate) and the node signs and seals it as the call's SDP. The page's
DTLS fingerprint travels inside that SDP, so it is bound to our identity exactly as
aiortc's is. The node keeps no media for such a call: the aiortc connection a leg
holds is never given a description, and relay failover is the page's business (the
node never hears frames, so its silence watch is off for browser calls).

The remote SDP a page needs (the answer to its offer, or an incoming offer) is read
from ``remote_sdp``; incoming offers are also announced as ``CallOffer`` events.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.sdp import SessionDescription

from p2pnode.connectivity.ice_servers import IcePlan
from p2pnode.sessions.call_config import CallMedia
from p2pnode.sessions.call_legs import CallSession as _Session  # the overridable hooks' types
from p2pnode.sessions.call_legs import MediaLeg as _Leg
from p2pnode.sessions.call_signal import MAX_SDP_BYTES
from p2pnode.sessions.calls import CallService

__all__ = [
    "MAX_BROWSER_SDP",
    "BrowserCallService",
    "BrowserMedia",
    "CallOffer",
    "PageIceServer",
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
    """Event: an incoming call's offer, for a page that will answer with its own connection."""

    call_id: str
    peer_id: str
    sdp: str


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

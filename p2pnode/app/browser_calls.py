"""The browser leg: the app page's ``RTCPeerConnection`` is the call's media endpoint.

A page's call is an ordinary ``CallService`` call with the service's public
option for "the SDP comes from somewhere else": ``CallMedia(sdp=PageSdp(...))``
(``sessions.call_sdp.SdpSource``). The call machine, glare, policy, timers and the
sealed "call" channel stay exactly the ones CLI calls use, so a page interoperates
with an aiortc peer, another page or the SIP bridge by construction. Only the SDP
changes hands: the offer or answer is the page's own (non-trickle: it waits for ICE
gathering, so the one SDP holds every candidate) and the node signs and seals it as
the call's SDP. The page's DTLS fingerprint travels inside that SDP, so it is bound
to our identity exactly as aiortc's is. The node keeps no media for such a call (no
connection, no frames), so its silence watch is off for page calls.

Relay failover moves the media to a new connection (a new DTLS fingerprint), so
the page must make every new SDP itself; the node never answers with an SDP the
page made for an earlier connection:

- the peer re-offers (it heard silence on our relay): the service holds the
  REOFFER, not answered, and the node announces it as a ``CallOffer`` with its
  generation; the page answers it with a fresh connection (``page_reanswer``) and
  only then does the call machine send the REANSWER, carrying that page's SDP;
- the page's own media fails (ICE failed, or no packet for a while): the page
  offers from a fresh connection (``page_reoffer``), the node sends it as a
  REOFFER, and the peer's REANSWER becomes the ``remote_sdp`` the page applies.

A page that takes longer than the peer's re-offer timeout is superseded by the
peer's next re-offer (its late answer is refused as stale).

A page reload loses the page's connection, never the call: the node keeps the call
(its signalling, its timers, the peer's leg), and the reloaded page re-attaches
(``page_attach``): it offers from a fresh connection and the peer re-answers it, the
same REOFFER/REANSWER as a relay failover. That one renegotiation with the peer is
unavoidable: the page's connection goes to the peer itself (the node relays no
media), and a new connection has new ICE credentials and a new DTLS fingerprint.
One page leg per call at a time: each attach numbers a new leg (``page_leg``), and
a second attach replaces the first; the page holding an older number stops its
connection and never re-offers again (the newest page wins, so two tabs never
take a call back and forth).

The remote SDP a page needs (the answer to its offer, or an incoming offer) is read
from ``remote_sdp``; incoming offers are also announced as ``CallOffer`` events.
``BrowserCallService`` only adds these page-facing names (and the page legs' numbers)
to ``CallService``; it overrides no call behaviour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.connectivity.ice_servers import IcePlan
from p2pnode.sessions.call import CallState
from p2pnode.sessions.call_config import CallMedia
from p2pnode.sessions.call_legs import first_codec
from p2pnode.sessions.call_sdp import StaleRenegotiationError
from p2pnode.sessions.call_signal import MAX_SDP_BYTES
from p2pnode.sessions.calls import CallService

__all__ = [
    "MAX_BROWSER_SDP",
    "BrowserCallService",
    "CallOffer",
    "PageIceServer",
    "PageSdp",
    "StaleRenegotiationError",
    "page_ice_servers",
    "page_media",
    "sdp_codec",
]

MAX_BROWSER_SDP = MAX_SDP_BYTES  # UTF-8 bytes, the call signal's bound; a page's is ~2-4 kB


@dataclass(frozen=True, slots=True)
class PageSdp:
    """``SdpSource``: the page's latest SDP, its offer (dial, re-offer) or its answer
    (answer, re-answer). A new one comes with every new page connection; the page
    reads the peer's answer from ``remote_sdp``, so ``accept`` has nothing to do."""

    sdp: str

    async def offer(self) -> str:
        return self.sdp

    async def reoffer(self) -> str:
        return self.sdp

    async def answer(self, remote: str) -> str:
        return self.sdp

    async def accept(self, remote: str) -> None:
        return None


def page_media(sdp: str, record_to: Path | None = None) -> CallMedia:
    """A call whose media endpoint is the page that made ``sdp``."""
    return CallMedia(record_to=record_to, sdp=PageSdp(sdp))


@dataclass(frozen=True, slots=True)
class CallOffer:
    """Event: an incoming call's offer (``generation`` 0), or a live call's re-offer
    (> 0), for a page that will answer with its own, new connection."""

    call_id: str
    peer_id: str
    sdp: str
    generation: int = 0


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


sdp_codec = first_codec  # the first audio codec of an SDP; any input gives a codec or None


class BrowserCallService(CallService):
    """``CallService`` whose calls may be a page's (``page_media``): page-facing names only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._page_legs: dict[bytes, int] = {}  # live attached calls only (pruned per attach)

    def page_leg(self, call_id: bytes) -> int:
        """The number of the page leg bound to ``call_id``: 0 from dial or answer, then
        one more per ``page_attach``. ``KeyError`` for an unknown call."""
        self.media(call_id)  # KeyError for an unknown call
        return self._page_legs.get(call_id, 0)

    async def page_attach(self, call_id: bytes, sdp: str) -> tuple[int, int]:
        """A (reloaded) page binds a new connection to live call ``call_id``: ``sdp`` is
        offered to the peer as a re-offer and the new leg replaces any earlier one.

        Returns ``(leg, generation)``; the peer's re-answer becomes ``remote_sdp``.
        ``StaleRenegotiationError`` when the call is not a live call of a page."""
        leg = self.page_leg(call_id) + 1
        generation = await self.page_reoffer(call_id, sdp)
        for known in list(self._page_legs):  # keep only live calls: bounded by max_calls
            if known != call_id and self._ended(known):
                del self._page_legs[known]
        self._page_legs[call_id] = leg
        return leg, generation

    def _check_leg(self, call_id: bytes, leg: int | None) -> None:
        """A replaced page leg moves nothing: only the newest attach speaks for the call."""
        if leg is not None and leg != self.page_leg(call_id):
            raise StaleRenegotiationError("this page leg was replaced by a later attach")

    def _ended(self, call_id: bytes) -> bool:
        try:
            return self.state(call_id) is not CallState.ANSWERED
        except KeyError:
            return True

    def held_reoffer(self, call_id: bytes) -> CallOffer | None:
        """The peer's re-offer waiting for this page's new connection, if any."""
        held = self.waiting_reoffer(call_id)
        if held is None:
            return None
        return CallOffer(call_id.hex(), self.peer(call_id), held.sdp, held.generation)

    async def page_reanswer(
        self, call_id: bytes, generation: int, sdp: str, leg: int | None = None
    ) -> None:
        """The page answered re-offer ``generation`` with a new connection: send it.

        ``StaleRenegotiationError`` when that re-offer is not the one waiting, or when
        ``leg`` (the page's leg number, if it says) was replaced by a later attach."""
        self._check_leg(call_id, leg)
        media = self.media(call_id)
        await self.answer_reoffer(call_id, generation, _with_page_sdp(media, sdp))

    async def page_reoffer(self, call_id: bytes, sdp: str, leg: int | None = None) -> int:
        """The page's media failed: offer ``sdp`` (a new connection's) to the peer.

        Returns the re-offer's generation; the peer's re-answer becomes ``remote_sdp``.
        A re-offer still unanswered is given up (only the newest can be answered).
        ``StaleRenegotiationError`` for a replaced ``leg``, as ``page_reanswer``."""
        if not self.is_browser(call_id):
            raise StaleRenegotiationError("not a live call of this page")
        self._check_leg(call_id, leg)
        media = self.media(call_id)
        return await self.reoffer(call_id, _with_page_sdp(media, sdp))

    def is_browser(self, call_id: bytes) -> bool:
        return isinstance(self.media(call_id).sdp, PageSdp)


def _with_page_sdp(media: CallMedia, sdp: str) -> CallMedia:
    return dataclasses.replace(media, sdp=PageSdp(sdp))

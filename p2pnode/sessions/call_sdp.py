"""Calls whose SDP comes from elsewhere: ``CallMedia(sdp=...)``, an ``SdpSource``.

Why: an endpoint outside the node may hold the call's connection (the desktop
app's page, its ``RTCPeerConnection``) while the node only carries its offers
and answers as the call's sealed, signed signals. The call machine, glare,
policy, timers and the "call" channel stay the ones every call uses, so such a
call interoperates with an aiortc peer, another page or the SIP bridge by
construction. The endpoint's DTLS fingerprint travels inside its SDP, so it is
bound to our identity exactly as aiortc's is.

What changes for such a call (see ``CallService``):

* every SDP is the source's: ``offer()`` for the dial, ``reoffer()`` for a
  re-offer from a new connection, ``answer(remote)`` for the incoming offer and
  for each re-offer it agreed to answer; ``accept(remote)`` is given the peer's
  answer to an offer or a re-offer;
* the node makes no connection and hears no frame, so its silence watch is
  off: the endpoint watches its own media and re-offers through
  ``CallService.reoffer``;
* a peer's re-offer is held, not answered (every new connection has a new
  fingerprint, so the endpoint must make each answer itself): the service
  reports ``REOFFER_HELD`` and keeps the newest one (``waiting_reoffer``) until
  ``CallService.answer_reoffer`` is called for its generation; an older or late
  one raises ``StaleRenegotiationError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from p2pnode.sessions.call_config import CallConfig, MediaPath
from p2pnode.sessions.call_legs import CallSession, MediaLeg, first_codec

__all__ = [
    "REOFFER_HELD",
    "HeldReoffer",
    "SdpSource",
    "SourceLegs",
    "StaleRenegotiationError",
    "path_for",
]

REOFFER_HELD = "re-offer held for the endpoint"  # the CallUpdate detail announcing one


class SdpSource(Protocol):
    """Who makes a call's SDP when an endpoint outside the node holds its connection."""

    async def offer(self) -> str:
        """The offer the dial sends."""
        ...

    async def reoffer(self) -> str:
        """An offer from a new connection (a re-offer)."""
        ...

    async def answer(self, remote: str) -> str:
        """The answer to ``remote``: the incoming call's offer, or a held re-offer's."""
        ...

    async def accept(self, remote: str) -> None:
        """The peer's answer to our offer or re-offer (also ``remote_sdp`` afterwards)."""
        ...


@dataclass(frozen=True, slots=True)
class HeldReoffer:
    """The peer's newest re-offer, waiting for the endpoint's new connection."""

    generation: int
    sdp: str


class StaleRenegotiationError(Exception):
    """A re-offer or re-answer that is no longer the one waiting (or the call is not live)."""


def path_for(config: CallConfig, generation: int) -> MediaPath:
    """The media path a generation uses: the paths rotate on failover."""
    return config.paths[generation % len(config.paths)]


class SourceLegs:
    """The legs of ``SdpSource`` calls: generations and paths, no connection in the node."""

    def __init__(self, config: Callable[[], CallConfig]) -> None:
        self._config = config

    def new_leg(self, session: CallSession, generation: int) -> MediaLeg:
        leg = MediaLeg(generation, path_for(self._config(), generation), None)
        leg.session = session
        return leg

    async def offer(self, session: CallSession, leg: MediaLeg) -> str:
        source = _source(session)
        return await (source.offer() if leg.generation == 0 else source.reoffer())

    async def answer(self, session: CallSession, leg: MediaLeg) -> str:
        assert session.remote_sdp is not None
        sdp = await _source(session).answer(session.remote_sdp)
        session.codec = first_codec(sdp)
        leg.answered = True
        return sdp

    async def accept(self, session: CallSession, leg: MediaLeg) -> None:
        assert session.remote_sdp is not None
        await _source(session).accept(session.remote_sdp)
        session.codec = first_codec(session.remote_sdp)
        leg.answered = True

    async def reanswered(self, session: CallSession, pending: MediaLeg) -> None:
        await self.accept(session, pending)
        pending.started = time.monotonic()


def _source(session: CallSession) -> SdpSource:
    source = session.media.sdp
    assert source is not None  # only SdpSource calls get these legs
    return source

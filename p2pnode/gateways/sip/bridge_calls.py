"""The bridge's P2P side: a calls service for the hosted identity.

A bridged call's audio is the phone leg's, bound through the calls service's
public option ``CallMedia(audio=PhoneCallAudio(leg))``
(:class:`~p2pnode.sessions.media.CallAudio`): the service sends the phone's
:class:`~p2pnode.gateways.sip.bridge_tracks.PhoneAudioTrack` on every
connection (G.711 reaches aiortc untouched as ``av.Packet`` when the
negotiated codec matches the phone's) and hands the peer's audio to the phone
leg (RTP payloads taken at the receiver for G.711, decoded frames otherwise).
So this class no longer overrides any of the service's private steps; it
stays a name of its own for the bridge's wiring and its callers.
"""

from __future__ import annotations

from p2pnode.sessions.calls import CallService

__all__ = ["BridgedCallService"]


class BridgedCallService(CallService):
    """The hosted identity's calls service; bridged calls bind media via ``CallMedia.audio``."""

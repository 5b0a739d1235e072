"""Control-API route for the SIP <-> P2P bridge: its counters, its bridges, its recent calls.

``GET /api/sip/bridge`` answers from the node's ``sip-bridge`` service
(``sip_bridge.py``); a node whose ``[sip]`` does not bridge answers 404 with the
settings to change. Calls in progress are listed with their RTCP path and
figures (round trip, the phone's loss and jitter of our stream); the texts
counters are the same as on /metrics. The same per-call observations stream live on the
WebSocket as ``SipBridgeEvent`` (the ``ended`` one carries the call's summary);
this route is what a client reads after the fact. Listed in ``api_sip.SIP_ROUTES``
so the OpenAPI document shows the models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pydantic
from aiohttp import web

from p2pnode.app.api_models import ApiError
from p2pnode.app.sip_bridge import BridgedCall, SipBridgeService
from p2pnode.app.sip_bridge_stats import LiveCall, SipBridgeStatistics

if TYPE_CHECKING:
    from p2pnode.app.control import ControlContext

__all__ = [
    "ActiveCallModel",
    "BridgeModel",
    "BridgedCallModel",
    "SipBridgeAnswer",
    "bridge_answer",
    "sip_bridge_status",
]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class BridgedCallModel(_Model):
    bridge: str = pydantic.Field(description="hosted login, or the bridge account (foreign)")
    call_id: str
    direction: str = pydantic.Field(description='"to-phone" (a peer called) or "from-phone"')
    peer: str = pydantic.Field(description="the P2P peer id on the other leg")
    phone_codec: str
    webrtc_codec: str = pydantic.Field(description='the P2P leg\'s codec, "" if none flowed')
    mode: str = pydantic.Field(description='"passthrough" or "transcoded"')
    seconds: float
    packets_from_phone: int
    lost: int
    jitter_ms: float
    packets_to_phone: int
    frames_from_peer: int
    passthrough_frames: int = pydantic.Field(description="phone -> peer frames untouched")
    direct_frames: int = pydantic.Field(
        description="of those, sent by the bridge's direct RTP sender (not aiortc's task)"
    )
    peer_passthrough_frames: int = pydantic.Field(description="peer -> phone frames untouched")
    transcoded_frames: int
    rtcp_sent: int = pydantic.Field(description="our RTCP reports to the phone")
    rtcp_received: int = pydantic.Field(description="the phone's RTCP compounds read")
    round_trip_ms: float | None = pydantic.Field(
        description="RTCP round trip to the phone (RFC 3550 6.4.1), null if never measured"
    )
    phone_reported_lost: int | None = pydantic.Field(
        description="our packets the phone reported lost (cumulative), null without a report"
    )
    phone_reported_jitter_ms: float | None = pydantic.Field(
        description="interarrival jitter of our stream as the phone reported it"
    )


class ActiveCallModel(_Model):
    bridge: str = pydantic.Field(description="hosted login, or the bridge account (foreign)")
    call_id: str | None = pydantic.Field(
        description="the P2P call's id (hex, as on its events and in recent once ended); "
        "null while the phone rings or the peer is dialled"
    )
    phone_codec: str
    rtcp: str = pydantic.Field(
        description='"mux" (RFC 5761), "separate" (own port, RFC 3605 a=rtcp) or "none"'
    )
    packets_from_phone: int
    packets_to_phone: int
    rtcp_sent: int
    rtcp_received: int
    round_trip_ms: float | None = pydantic.Field(description="latest RTCP round trip")
    phone_fraction_lost: float | None = pydantic.Field(
        description="0..1, of our packets over the phone's last report interval"
    )
    phone_reported_lost: int | None
    phone_reported_jitter_ms: float | None
    rtcp_dropped: dict[str, int] = pydantic.Field(description="RTCP refused, by reason")


class BridgeModel(_Model):
    login: str
    callers: str = pydantic.Field(description='"hosted" (its own phones) or "foreign"')
    peer_id: str = pydantic.Field(description="the P2P identity it calls and answers as")
    homes: int = pydantic.Field(description="homes its signalling is attached to")
    active_calls: int


class BridgeCallCount(_Model):
    direction: str
    mode: str
    calls: int


class SipBridgeAnswer(_Model):
    account: str = pydantic.Field(description="the gateway account the bridges register as")
    active_calls: int
    calls: list[BridgeCallCount] = pydantic.Field(description="ended answered calls")
    refusals: dict[str, int] = pydantic.Field(description="calls not connected, by reason")
    packets_from_phone: int
    packets_to_phone: int
    lost: int
    passthrough_frames: int
    transcoded_frames: int
    digits_from_phone: int
    digits_to_phone: int
    digits_dropped: int
    texts: dict[str, int] = pydantic.Field(
        description="texts of the hosted identities: to-chat, to-phones, refused, failed"
    )
    texts_held: int = pydantic.Field(description="chat texts held until a phone registers")
    rtcp_sent: int = pydantic.Field(description="RTCP reports to phones, ended and live calls")
    rtcp_received: int
    bridges: list[BridgeModel]
    active: list[ActiveCallModel] = pydantic.Field(description="phone legs in progress")
    recent: list[BridgedCallModel] = pydantic.Field(description="the newest ended calls")


def _call(call: BridgedCall) -> BridgedCallModel:
    s = call.summary
    return BridgedCallModel(
        bridge=call.bridge,
        call_id=call.call_id.hex(),
        direction=s.direction.value,
        peer=s.peer,
        phone_codec=s.phone_codec,
        webrtc_codec=s.webrtc_codec,
        mode=s.mode.value,
        seconds=round(s.seconds, 3),
        packets_from_phone=s.packets_from_phone,
        lost=s.lost,
        jitter_ms=round(s.jitter_ms, 2),
        packets_to_phone=s.packets_to_phone,
        frames_from_peer=s.frames_from_peer,
        passthrough_frames=s.passthrough_frames,
        direct_frames=s.direct_frames,
        peer_passthrough_frames=s.peer_passthrough_frames,
        transcoded_frames=s.transcoded_frames,
        rtcp_sent=s.rtcp_sent,
        rtcp_received=s.rtcp_received,
        round_trip_ms=_round(s.round_trip_ms, 3),
        phone_reported_lost=s.phone_reported_lost,
        phone_reported_jitter_ms=_round(s.phone_reported_jitter_ms, 2),
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _active(call: LiveCall) -> ActiveCallModel:
    r = call.rtcp
    return ActiveCallModel(
        bridge=call.bridge,
        call_id=None if call.call_id is None else call.call_id.hex(),
        phone_codec=call.phone_codec,
        rtcp=call.rtcp_path.value,
        packets_from_phone=call.packets_from_phone,
        packets_to_phone=call.packets_to_phone,
        rtcp_sent=0 if r is None else r.reports_sent,
        rtcp_received=0 if r is None else r.reports_received,
        round_trip_ms=None if r is None else _round(r.round_trip_ms, 3),
        phone_fraction_lost=None if r is None else r.phone_fraction_lost,
        phone_reported_lost=None if r is None else r.phone_cumulative_lost,
        phone_reported_jitter_ms=None if r is None else _round(r.phone_jitter_ms, 2),
        rtcp_dropped={} if r is None else {reason.value: n for reason, n in r.dropped},
    )


def bridge_answer(s: SipBridgeStatistics) -> SipBridgeAnswer:
    """The route's answer from the service's snapshot."""
    return SipBridgeAnswer(
        account=s.account,
        active_calls=s.active_calls,
        calls=[BridgeCallCount(direction=d.value, mode=m.value, calls=n) for d, m, n in s.calls],
        refusals=dict(s.refusals),
        packets_from_phone=s.packets_from_phone,
        packets_to_phone=s.packets_to_phone,
        lost=s.lost,
        passthrough_frames=s.passthrough_frames,
        transcoded_frames=s.transcoded_frames,
        digits_from_phone=s.digits_from_phone,
        digits_to_phone=s.digits_to_phone,
        digits_dropped=s.digits_dropped,
        texts=dict(s.texts),
        texts_held=s.texts_held,
        rtcp_sent=s.rtcp_sent,
        rtcp_received=s.rtcp_received,
        bridges=[
            BridgeModel(
                login=b.login,
                callers=b.callers.value,
                peer_id=b.peer_id,
                homes=b.homes,
                active_calls=b.statistics.active_calls,
            )
            for b in s.bridges
        ],
        active=[_active(call) for call in s.live],
        recent=[_call(call) for call in s.recent],
    )


async def sip_bridge_status(ctx: ControlContext, request: web.Request) -> web.StreamResponse:
    try:
        service = ctx.node.service("sip-bridge")
    except KeyError:
        body = ApiError(
            error="sip bridge not enabled",
            detail="set [sip] enabled = true with [presence] enabled (or sip.bridge = true)",
        )
        text = body.model_dump_json()
        return web.Response(text=text, status=404, content_type="application/json")
    assert isinstance(service, SipBridgeService)
    answer = bridge_answer(service.statistics())
    return web.Response(text=answer.model_dump_json(), content_type="application/json")

"""Control-API route for the SIP <-> P2P bridge: its counters, its bridges, its recent calls.

``GET /api/sip/bridge`` answers from the node's ``sip-bridge`` service
(``sip_bridge.py``); a node whose ``[sip]`` does not bridge answers 404 with the
settings to change. The same per-call observations stream live on the
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

if TYPE_CHECKING:
    from p2pnode.app.control import ControlContext

__all__ = ["BridgeModel", "BridgedCallModel", "SipBridgeAnswer", "sip_bridge_status"]


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
    passthrough_frames: int
    transcoded_frames: int


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
    bridges: list[BridgeModel]
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
        transcoded_frames=s.transcoded_frames,
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
    s = service.statistics()
    answer = SipBridgeAnswer(
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
        recent=[_call(call) for call in s.recent],
    )
    return web.Response(text=answer.model_dump_json(), content_type="application/json")

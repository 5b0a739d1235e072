"""Control-API route for the SIP gateway: its status and the registered devices.

Kept apart from ``control.py`` (which lists ``SIP_ROUTES`` in its route table,
so the OpenAPI document shows these models). The handler answers from the
node's ``sip`` service; a node without ``[sip] enabled`` answers 404 with the
setting to change, and a gateway not running (starting, failed) answers 503,
so ``p2pnode sip status`` can tell the operator which it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pydantic
from aiohttp import web

from p2pnode.app.api_models import ApiError
from p2pnode.app.api_sip_bridge import SipBridgeAnswer, sip_bridge_status
from p2pnode.app.sip_service import SipService
from p2pnode.gateways.sip.gateway import SipGateway

if TYPE_CHECKING:
    from p2pnode.app.control import ControlContext

__all__ = [
    "SIP_ROUTES",
    "SipRegistrationModel",
    "SipStatusAnswer",
    "SipUnregisterAnswer",
    "SipUnregisterQuery",
    "drop_registrations",
]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class SipRegistrationModel(_Model):
    login: str
    contact: str
    source: str = pydantic.Field(description="HOST:PORT the device registered from")
    transport: str = pydantic.Field(description='"udp" or "stream" (TCP/TLS)')
    expires_in: int = pydantic.Field(description="seconds left")
    user_agent: str = pydantic.Field("", description="the device's User-Agent, if it sent one")


class SipStatusAnswer(_Model):
    domain: str
    address: str = pydantic.Field(description="HOST:PORT of SIP over UDP and TCP")
    tls_address: str = pydantic.Field(description='HOST:PORT of SIP over TLS, "" if none')
    accounts: int
    registered_accounts: int
    active_calls: int
    calls_started: int
    calls_answered: int
    rtp_forwarded: int
    auth_failures: int
    banned_sources: int
    login_claims: int
    bindings_expired: int = pydantic.Field(0, description="registrations that ran out unrefreshed")
    cancelled_lookups: int = pydantic.Field(
        0, description="calls cancelled while DNS/ENUM was locating them"
    )
    registrations: list[SipRegistrationModel]
    truncated: bool = pydantic.Field(description="more registrations than listed")


class SipUnregisterQuery(_Model):
    contact: str | None = pydantic.Field(
        None, max_length=1024, description="the device's contact URI as listed; none: all"
    )


class SipUnregisterAnswer(_Model):
    login: str
    removed: int = pydantic.Field(description="registrations dropped")


def drop_registrations(gateway: SipGateway, login: str, contact: str | None, now: float) -> int:
    """Drop ``login``'s bindings (only the one whose contact is ``contact``, as
    ``/api/sip`` lists it) from the running registrar, and stop pinging them; how many.

    Why at once and not at expiry: a removed account's devices, or a device the person
    unregistered, must stop ringing now (a device re-registering needs the password,
    which a removed account no longer has)."""
    removed = 0
    for binding in gateway.registrar.bindings(login, now):
        uri = str(binding.contact)
        if contact is not None and uri != contact:
            continue
        if gateway.registrar.remove(login, binding.contact):
            removed += 1
        gateway.pinger.keepalive.unwatch((login, uri))
    gateway.pinger.arm()
    return removed


def _error(status: int, error: str, detail: str) -> web.Response:
    body = ApiError(error=error, detail=detail).model_dump_json()
    return web.Response(text=body, status=status, content_type="application/json")


async def sip_status(ctx: ControlContext, request: web.Request) -> web.StreamResponse:
    try:
        service = ctx.node.service("sip")
    except KeyError:
        return _error(404, "sip not enabled", "set [sip] enabled = true")
    assert isinstance(service, SipService)
    status = service.status(asyncio.get_running_loop().time())
    gateway = status.statistics.gateway
    if gateway is None:
        return _error(503, "sip gateway not running", "see p2pnode status for its state")
    answer = SipStatusAnswer(
        domain=status.statistics.domain,
        address=status.statistics.address,
        tls_address=status.statistics.tls_address,
        accounts=status.statistics.accounts,
        registered_accounts=gateway.registered_accounts,
        active_calls=gateway.active_calls,
        calls_started=gateway.calls_started,
        calls_answered=gateway.calls_answered,
        rtp_forwarded=gateway.rtp_forwarded,
        auth_failures=gateway.auth_failures,
        banned_sources=gateway.banned_sources,
        login_claims=gateway.login_claims,
        bindings_expired=gateway.bindings_expired,
        cancelled_lookups=gateway.cancelled_lookups,
        registrations=[
            SipRegistrationModel(
                login=r.login,
                contact=r.contact,
                source=r.source,
                transport=r.transport,
                expires_in=r.expires_in,
                user_agent=r.user_agent,
            )
            for r in status.registrations
        ],
        truncated=status.truncated,
    )
    return web.Response(text=answer.model_dump_json(), content_type="application/json")


async def sip_unregister(ctx: ControlContext, request: web.Request) -> web.StreamResponse:
    try:
        service = ctx.node.service("sip")
    except KeyError:
        return _error(404, "sip not enabled", "set [sip] enabled = true")
    assert isinstance(service, SipService)
    gateway = service.gateway
    if gateway is None:
        return _error(503, "sip gateway not running", "see p2pnode status for its state")
    try:
        query = SipUnregisterQuery.model_validate(dict(request.query))
    except pydantic.ValidationError:
        return _error(400, "invalid query", "contact: the device's contact URI")
    login = request.match_info["login"]
    now = asyncio.get_running_loop().time()
    removed = drop_registrations(gateway, login, query.contact, now)
    if query.contact is not None and removed == 0:
        return _error(404, "no such registration", "see GET /api/sip")
    answer = SipUnregisterAnswer(login=login, removed=removed)
    return web.Response(text=answer.model_dump_json(), content_type="application/json")


SIP_ROUTES: tuple[
    tuple[
        str,
        str,
        Callable[[ControlContext, web.Request], Awaitable[web.StreamResponse]],
        str,
        type[pydantic.BaseModel] | None,
        type[pydantic.BaseModel] | None,
        type[pydantic.BaseModel] | None,
    ],
    ...,
] = (
    ("GET", "/api/sip", sip_status, "SIP gateway: counters and registered devices",
     SipStatusAnswer, None, None),
    ("GET", "/api/sip/bridge", sip_bridge_status,
     "SIP <-> P2P bridge: calls by direction and mode, refusals, recent calls",
     SipBridgeAnswer, None, None),
    ("DELETE", "/api/sip/registrations/{login}", sip_unregister,
     "drop a login's registered devices now (all, or the one ?contact= names)",
     SipUnregisterAnswer, None, SipUnregisterQuery),
)  # fmt: skip

"""The SIP equipment view's ``/app/sip*`` routes: list, add, new password, limits, remove.

Split out of ``server`` (the app server: guard, links, proxy, the other routes);
the work is ``sip_accounts`` (the home's accounts file) and, for a removal, the
running gateway's registrar (``api_sip.drop_registrations``), so a removed
account's phones stop ringing at once. The server's guard has already checked
Host, Origin and the session; refusals are ``AppError`` (answered by the guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import pydantic
from aiohttp import web

from p2pnode.app.api_sip import drop_registrations
from p2pnode.app.control import ControlService
from p2pnode.app.sip_service import SipService
from p2pnode.app.web.app_requests import AppError, read_body
from p2pnode.app.web.sip_accounts import (
    add_account,
    list_accounts,
    remove_account,
    reset_password,
    set_limits,
)
from p2pnode.gateways.sip.accounts import MAX_ACCOUNT_CALLS, AccountError

__all__ = ["sip_account_routes"]


class _SipAccountRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    login: str = pydantic.Field(min_length=2, max_length=32)
    domain: str | None = pydantic.Field(None, min_length=1, max_length=253)


class _SipLimitsRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    allow_e164: bool
    max_calls: int = pydantic.Field(ge=1, le=MAX_ACCOUNT_CALLS)


def sip_account_routes(home: Path, control: ControlService) -> list[web.RouteDef]:
    """The routes over ``home``'s accounts and ``control``'s running gateway."""

    async def sip_list(request: web.Request) -> web.Response:
        domain, accounts = await asyncio.to_thread(list_accounts, home)
        return web.json_response(
            {"domain": domain, "accounts": [dataclasses.asdict(a) for a in accounts]}
        )

    async def sip_add(request: web.Request) -> web.Response:
        body = await read_body(request, _SipAccountRequest)
        try:
            added = await asyncio.to_thread(add_account, home, body.login, body.domain)
        except AccountError as error:
            raise AppError(400, "account refused", str(error)) from None
        return web.json_response(dataclasses.asdict(added))

    async def sip_reset(request: web.Request) -> web.Response:
        try:
            made = await asyncio.to_thread(reset_password, home, request.match_info["login"])
        except AccountError as error:
            raise AppError(404, "no such account", str(error)) from None
        return web.json_response(dataclasses.asdict(made))

    async def sip_limits(request: web.Request) -> web.Response:
        body = await read_body(request, _SipLimitsRequest)
        login = request.match_info["login"]
        try:
            view = await asyncio.to_thread(set_limits, home, login, body.allow_e164, body.max_calls)
        except AccountError as error:
            raise AppError(404, "no such account", str(error)) from None
        return web.json_response(dataclasses.asdict(view))

    async def sip_remove(request: web.Request) -> web.Response:
        login = request.match_info["login"]
        try:
            await asyncio.to_thread(remove_account, home, login)
        except AccountError as error:
            raise AppError(404, "no such account", str(error)) from None
        dropped = 0  # its devices stop ringing now, not at their expiry
        ctx = control.ctx
        with contextlib.suppress(KeyError):
            service = None if ctx is None else ctx.node.service("sip")
            if isinstance(service, SipService) and service.gateway is not None:
                now = asyncio.get_running_loop().time()
                dropped = drop_registrations(service.gateway, login, None, now)
        return web.json_response({"login": login, "removed": True, "devices_dropped": dropped})

    return [
        web.get("/app/sip", sip_list),
        web.post("/app/sip/accounts", sip_add),
        web.post("/app/sip/accounts/{login}/password", sip_reset),
        web.delete("/app/sip/accounts/{login}", sip_remove),
        web.put("/app/sip/accounts/{login}/limits", sip_limits),
    ]

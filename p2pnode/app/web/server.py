"""The desktop app server: static files, one-time links, and the control API behind a session.

Why a separate origin (``[web]`` port, see ``web_config``): the browser holds a
cookie, programs hold the control token; the two never authorise each other.
Every request passes, in this order:

1. **Host** must be the loopback name and port we listen on (DNS rebinding:
   a hostile site's name resolving to 127.0.0.1 still carries its own Host) -> 403.
2. **Origin**, when present, must be our own origin; state-changing requests
   and the WebSocket must carry it (CSRF: a page elsewhere cannot post here) -> 403.
3. ``/api/*`` and ``/app/*`` need a live session cookie -> 401 (``/app/ticket``
   needs the control token instead: that is how ``p2pnode app`` gets a link).

``/api/*`` is forwarded to the control API with the token (the page never sees
it); ``/api/events`` is relayed WebSocket to WebSocket. ``/app/*`` holds what
only this package does: who am I, claim a login, identity backup export/import,
SIP accounts (add, new password, limits, remove: its registrations dropped at once;
the routes are ``sip_routes``, the body and refusal rules ``app_requests``), and a
page call's renegotiation (its re-offer, or its answer to the peer's re-offer,
when a relay fails: ``browser_calls``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pydantic
from aiohttp import WSMsgType, web

from nat.logsafe import RefusalLog
from p2pnode.app.bodies import read_capped
from p2pnode.app.browser_calls import (
    MAX_BROWSER_SDP,
    BrowserCallService,
    StaleRenegotiationError,
)
from p2pnode.app.control import ControlService
from p2pnode.app.homefiles import read_token
from p2pnode.app.node import Node
from p2pnode.app.peer_calls import CallsNodeService
from p2pnode.app.services import directory_of
from p2pnode.app.web.app_requests import MAX_APP_BODY, AppError, read_body
from p2pnode.app.web.backup import (
    MAX_BACKUP_BYTES,
    BackupDecodeError,
    open_backup,
    read_seed,
    seal_backup,
)
from p2pnode.app.web.sessions import SessionsStatistics, SessionTable
from p2pnode.app.web.sip_routes import sip_account_routes
from p2pnode.app.web_config import WEB_FILE, WebSection
from p2pnode.directory.names import LoginError, normalise_login
from p2pnode.identity import (
    KEY_FILE_NAME,
    Identity,
    fingerprint_for,
    peer_id_for,
    public_key_from_peer_id,
)

__all__ = [
    "COOKIE",
    "MAX_APP_BODY",  # re-exported: it lived here first (app_requests)
    "WEB_FILE",
    "WebBackend",
    "WebService",
    "WebStatistics",
    "add_web_service",
    "build_web_app",
]

logger = logging.getLogger(__name__)

COOKIE = "p2pnode_session"
STATIC = Path(__file__).parent / "static"
MAX_PROXY_BODY = 64 * 1024  # bodies forwarded to the control API at most
PROXY_TIMEOUT = 30.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _csp() -> str:
    """The page's policy: our own scripts plus the inline importmap, allowed by its hash."""
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    start = text.index('<script type="importmap">') + len('<script type="importmap">')
    digest = hashlib.sha256(text[start : text.index("</script>", start)].encode()).digest()
    return (
        f"default-src 'self'; script-src 'self' 'sha256-{base64.b64encode(digest).decode()}'; "
        "style-src 'self'; img-src 'self' data:; connect-src 'self'; media-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


CSP = _csp()


@dataclass(frozen=True)
class WebStatistics:
    url: str
    requests: int
    forbidden: int
    unauthorized: int
    proxied: int
    sessions: SessionsStatistics


class _Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.forbidden = 0
        self.unauthorized = 0
        self.proxied = 0


class _ClaimRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    login: str = pydantic.Field(min_length=1, max_length=64)


class _ExportRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    passphrase: str = pydantic.Field(min_length=8, max_length=1024)


class _PageSdpRequest(pydantic.BaseModel):
    """A page's SDP for a live call: a re-offer (no generation) or the answer to the
    peer's re-offer ``generation``."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    sdp: str = pydantic.Field(min_length=1, max_length=MAX_BROWSER_SDP)
    generation: int | None = pydantic.Field(None, ge=1, le=2**31)
    leg: int | None = pydantic.Field(None, ge=0, le=2**31)  # the page leg it speaks for


class _ImportRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    passphrase: str = pydantic.Field(min_length=1, max_length=1024)
    backup: str = pydantic.Field(min_length=1, max_length=MAX_BACKUP_BYTES)


def _error(status: int, error: str, detail: str = "") -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


@dataclass(frozen=True)
class WebBackend:
    """What the app server reaches: the control API (URL + token) and the home's identity."""

    home: Path
    identity: Identity
    control: ControlService


def _token(backend: WebBackend) -> str:
    token = read_token(backend.home)
    if token is None:
        raise AppError(503, "control API not running")
    return token


def build_web_app(
    backend: WebBackend,
    section: WebSection,
    port: Callable[[], int],
    clock: Callable[[], float] = time.monotonic,
    counters: _Counters | None = None,
    table: SessionTable | None = None,
) -> web.Application:
    """The aiohttp application; ``port()`` is the bound port (known once listening)."""
    count = counters or _Counters()
    sessions = table or SessionTable(section.session_hours * 3600.0)
    refusals = RefusalLog(logger, time.monotonic)
    client: list[aiohttp.ClientSession] = []

    def hosts() -> frozenset[str]:
        p = port()
        return frozenset({f"127.0.0.1:{p}", f"localhost:{p}", f"[::1]:{p}"})

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        count.requests += 1
        allowed = hosts()
        origin = request.headers.get("Origin")
        if request.host not in allowed:
            count.forbidden += 1
            refusals.refused("web-app", "wrong-host", request.remote or "-")
            return _error(403, "forbidden", "wrong Host")
        unsafe = request.method not in SAFE_METHODS or request.path == "/api/events"
        if origin is not None and origin not in {f"http://{h}" for h in allowed}:
            count.forbidden += 1
            refusals.refused("web-app", "wrong-origin", request.remote or "-")
            return _error(403, "forbidden", "wrong Origin")
        if request.path == "/app/ticket":  # the CLI: control token, no browser involved
            token = read_token(backend.home)
            expected = f"Bearer {token}".encode()
            if token is None or not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), expected
            ):
                count.unauthorized += 1
                return _error(401, "unauthorized", "give the control token")
            return await handler(request)
        if request.path.startswith(("/api/", "/app/")):
            if origin is None and unsafe:
                count.forbidden += 1
                refusals.refused("web-app", "no-origin", request.remote or "-")
                return _error(403, "forbidden", "no Origin")
            if not sessions.check(request.cookies.get(COOKIE, ""), clock()):
                count.unauthorized += 1
                refusals.refused("web-app", "no-session", request.remote or "-")
                return _error(401, "unauthorized", "open the app with `p2pnode app`")
        try:
            return await handler(request)
        except AppError as error:
            return _error(error.status, error.error, error.detail)

    async def ticket(request: web.Request) -> web.Response:
        value = secrets.token_urlsafe(32)
        sessions.add_ticket(value, clock())
        return web.json_response({"url": f"http://{request.host}/open?ticket={value}"})

    async def open_link(request: web.Request) -> web.Response:
        session = secrets.token_urlsafe(32)
        if not sessions.spend_ticket(request.query.get("ticket", ""), session, clock()):
            count.unauthorized += 1
            return _error(401, "unauthorized", "this link was used or expired: run `p2pnode app`")
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE, session, httponly=True, samesite="Strict", path="/", max_age=None
        )
        raise response

    async def index(request: web.Request) -> web.FileResponse:
        response = web.FileResponse(STATIC / "index.html")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "peer_id": backend.identity.peer_id,
                "fingerprint": backend.identity.fingerprint,
                "home": str(backend.home),
            }
        )

    async def fingerprint(request: web.Request) -> web.Response:
        try:  # the page cannot compute it: BLAKE2b with a person string is not in WebCrypto
            key = public_key_from_peer_id(request.match_info["peer_id"])
        except ValueError:
            raise AppError(400, "bad peer id") from None
        return web.json_response({"peer_id": peer_id_for(key), "fingerprint": fingerprint_for(key)})

    async def claim(request: web.Request) -> web.Response:
        body = await read_body(request, _ClaimRequest)
        ctx = backend.control.ctx
        if ctx is None:
            raise AppError(503, "node starting")
        try:
            login = normalise_login(body.login)
            directory = directory_of(ctx.dht, ctx.trusted)
            async with asyncio.timeout(PROXY_TIMEOUT):
                published = await directory.claim_name(backend.identity, login)
        except LoginError as error:
            raise AppError(400, "bad login", str(error)) from None
        except TimeoutError:
            raise AppError(504, "network timeout") from None
        return web.json_response(
            {"login": login, "stored_on": published.stored_on, "notes": list(published.notes)}
        )

    async def export_identity(request: web.Request) -> web.Response:
        body = await read_body(request, _ExportRequest)
        seed = read_seed(backend.home)
        data = await asyncio.to_thread(
            seal_backup, seed, body.passphrase, os.urandom(16), os.urandom(24)
        )
        name = f"p2pnode-{backend.identity.peer_id[:8].lower()}.backup.json"
        return web.Response(
            body=data,
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def import_identity(request: web.Request) -> web.Response:
        body = await read_body(request, _ImportRequest)
        try:
            opened = await asyncio.to_thread(
                open_backup, body.backup.encode("utf-8"), body.passphrase
            )
        except BackupDecodeError as error:
            raise AppError(400, "bad backup", str(error)) from None
        if opened.peer_id == backend.identity.peer_id:
            return web.json_response({"peer_id": opened.peer_id, "replaced": False})
        # keep the current key beside the new one: nothing is ever lost by an import
        current = backend.home / KEY_FILE_NAME
        kept = backend.home / f"{KEY_FILE_NAME}.replaced-{int(time.time())}"
        os.replace(current, kept)
        Identity.generate(opened.seed).save(backend.home)
        return web.json_response(
            {"peer_id": opened.peer_id, "replaced": True, "kept": kept.name, "restart": True}
        )

    def page_calls() -> BrowserCallService:
        ctx = backend.control.ctx
        if ctx is None:
            raise AppError(503, "node starting")
        try:
            service = ctx.node.service(CallsNodeService.name)
        except KeyError:
            raise AppError(404, "calls not enabled", "set [calls] enabled = true") from None
        if not isinstance(service, CallsNodeService) or service.calls is None:
            raise AppError(503, "calls not running")
        return service.calls

    def call_id_of(request: web.Request) -> bytes:
        try:
            return bytes.fromhex(request.match_info["call_id"])
        except ValueError:
            raise AppError(400, "bad call id", "hex expected") from None

    async def page_sdp(request: web.Request) -> _PageSdpRequest:
        body = await read_body(request, _PageSdpRequest, MAX_BROWSER_SDP * 2)
        if len(body.sdp.encode("utf-8")) > MAX_BROWSER_SDP:
            raise AppError(413, "sdp too large", f"at most {MAX_BROWSER_SDP} bytes")
        return body

    async def held_reoffer(request: web.Request) -> web.Response:
        calls, call_id = page_calls(), call_id_of(request)
        try:
            held = calls.held_reoffer(call_id)
            leg = {"page": calls.is_browser(call_id), "leg": calls.page_leg(call_id)}
        except KeyError:
            raise AppError(404, "no such call") from None
        if held is None:
            return web.json_response({"generation": 0, "sdp": None, **leg})
        return web.json_response({"generation": held.generation, "sdp": held.sdp, **leg})

    async def attach(request: web.Request) -> web.Response:
        body = await page_sdp(request)
        try:
            leg, generation = await page_calls().page_attach(call_id_of(request), body.sdp)
        except KeyError:
            raise AppError(404, "no such call") from None
        except StaleRenegotiationError as error:
            raise AppError(409, "cannot attach", str(error)) from None
        return web.json_response({"leg": leg, "generation": generation})

    async def reoffer(request: web.Request) -> web.Response:
        body = await page_sdp(request)
        try:
            generation = await page_calls().page_reoffer(call_id_of(request), body.sdp, body.leg)
        except KeyError:
            raise AppError(404, "no such call") from None
        except StaleRenegotiationError as error:
            raise AppError(409, "cannot re-offer", str(error)) from None
        return web.json_response({"generation": generation})

    async def reanswer(request: web.Request) -> web.Response:
        body = await page_sdp(request)
        if body.generation is None:
            raise AppError(400, "invalid request", "generation: the re-offer answered")
        try:
            await page_calls().page_reanswer(
                call_id_of(request), body.generation, body.sdp, body.leg
            )
        except KeyError:
            raise AppError(404, "no such call") from None
        except StaleRenegotiationError as error:
            raise AppError(409, "stale re-offer", str(error)) from None
        return web.json_response({"generation": body.generation})

    async def http() -> aiohttp.ClientSession:
        if not client:
            client.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT)))
        return client[0]

    async def proxy(request: web.Request) -> web.StreamResponse:
        if not backend.control.url:
            raise AppError(503, "control API not running")
        raw = await read_capped(request, MAX_PROXY_BODY)
        if raw is None:
            raise AppError(413, "body too large")
        count.proxied += 1
        headers = {"Authorization": f"Bearer {_token(backend)}"}
        if request.content_type and raw:
            headers["Content-Type"] = request.content_type
        session = await http()
        try:
            async with session.request(
                request.method,
                backend.control.url + request.path_qs,
                data=raw or None,
                headers=headers,
            ) as answer:
                payload = await answer.read()
                return web.Response(
                    body=payload,
                    status=answer.status,
                    content_type=answer.content_type or "application/json",
                )
        except (aiohttp.ClientError, TimeoutError):
            raise AppError(502, "control API unreachable") from None

    async def events(request: web.Request) -> web.StreamResponse:
        if not backend.control.url:
            raise AppError(503, "control API not running")
        session = await http()
        upstream_url = backend.control.url.replace("http://", "ws://", 1) + "/api/events"
        try:
            upstream = await session.ws_connect(upstream_url, params={"token": _token(backend)})
        except (aiohttp.ClientError, TimeoutError):
            raise AppError(502, "control API unreachable") from None
        socket = web.WebSocketResponse(heartbeat=30.0)
        await socket.prepare(request)
        async with upstream:

            async def down() -> None:
                async for message in upstream:
                    if message.type != WSMsgType.TEXT:
                        break
                    await socket.send_str(message.data)
                await socket.close()

            async with asyncio.TaskGroup() as tasks:
                pump = tasks.create_task(down())
                async for message in socket:  # the page sends nothing; end when it closes
                    if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
                pump.cancel()
        return socket

    async def close_client(app: web.Application) -> None:
        for session in client:
            await session.close()

    app = web.Application(middlewares=[guard], client_max_size=MAX_PROXY_BODY)
    app.router.add_get("/", index)
    app.router.add_get("/open", open_link)
    app.router.add_post("/app/ticket", ticket)
    app.router.add_get("/app/whoami", whoami)
    app.router.add_get("/app/fingerprint/{peer_id}", fingerprint)
    app.router.add_post("/app/login", claim)
    app.router.add_post("/app/identity/export", export_identity)
    app.router.add_post("/app/identity/import", import_identity)
    app.router.add_routes(sip_account_routes(backend.home, backend.control))  # sip_routes.py
    app.router.add_get("/app/calls/{call_id}/reoffer", held_reoffer)
    app.router.add_post("/app/calls/{call_id}/reoffer", reoffer)
    app.router.add_post("/app/calls/{call_id}/reanswer", reanswer)
    app.router.add_post("/app/calls/{call_id}/attach", attach)
    app.router.add_get("/api/events", events)
    app.router.add_route("*", "/api/{tail:.*}", proxy)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.on_cleanup.append(close_client)
    return app


class WebService:
    """Hosts the app server on ``[web]`` host:port and writes its URL to ``<home>/web.json``."""

    name = "web"

    def __init__(
        self, home: Path, section: WebSection, identity: Identity, control: ControlService
    ) -> None:
        self.home = home
        self.section = section
        self.url = ""
        self._backend = WebBackend(home, identity, control)
        self._counters = _Counters()
        self._table = SessionTable(section.session_hours * 3600.0)
        self._port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = build_web_app(
            self._backend, self.section, lambda: self._port, time.monotonic,
            self._counters, self._table,
        )  # fmt: skip
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        host = "127.0.0.1" if self.section.host == "localhost" else self.section.host
        shown = f"[{host}]" if ":" in host else host
        site = web.TCPSite(runner, host, self.section.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        self.url = f"http://{shown}:{self._port}"
        (self.home / WEB_FILE).write_text(json.dumps({"url": self.url, "pid": os.getpid()}))

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.home / WEB_FILE).unlink()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def statistics(self) -> WebStatistics:
        c = self._counters
        return WebStatistics(
            self.url, c.requests, c.forbidden, c.unauthorized, c.proxied, self._table.statistics()
        )


def add_web_service(
    home: Path, section: WebSection, identity: Identity, node: Node, control: ControlService | None
) -> WebService | None:
    """The runtime's hook: host the app server when ``[web]`` and ``[control]`` are on."""
    if not section.enabled or control is None:
        return None
    service = WebService(home, section, identity, control)
    node.add(service)
    return service

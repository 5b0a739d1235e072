"""The local control API: JSON over HTTP and a WebSocket event stream, on loopback only.

Why a token on loopback too: any local user (or a web page the user visits,
through DNS rebinding) can reach 127.0.0.1. The token is 32 random bytes in
``<home>/control.token`` (mode 0600), so only who can read the home can drive
the node; every request without it gets 401, the OpenAPI document included.
The bound URL is written to ``<home>/control.json`` so the CLI finds the
running node of a home (and removed on stop).

Routes are one table (``ROUTES``): method, path, handler, request/response
models. The handlers use those models, and ``openapi()`` builds the OpenAPI
3.1 document from the same table and the models' JSON Schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from aiohttp import WSCloseCode, WSMsgType, web

from nat.logsafe import RefusalLog
from p2pnode import __version__
from p2pnode.app.api_contacts import CONTACT_ROUTES
from p2pnode.app.api_messaging import MESSAGING_ROUTES
from p2pnode.app.api_models import (
    ApiError,
    NameAnswer,
    RecordModel,
    RecordPutAnswer,
    RecordPutRequest,
    RecordQuery,
    RecordsAnswer,
    RelayState,
    ServiceModel,
    StatusAnswer,
    TableModel,
    resolution_answer,
)
from p2pnode.app.api_peer import PEER_ROUTES
from p2pnode.app.api_sip import SIP_ROUTES
from p2pnode.app.bodies import read_model
from p2pnode.app.homefiles import CONTROL_FILE, TOKEN_FILE, read_token
from p2pnode.app.node import Node
from p2pnode.app.roles import SupernodeService
from p2pnode.app.service import NodeStopping, event_json, snapshot_json
from p2pnode.app.services import DhtService, RelaySearchService, directory_of
from p2pnode.directory.e164 import normalise_e164
from p2pnode.directory.lookup import DirectoryTimeoutError
from p2pnode.directory.names import LoginError, normalise_login
from p2pnode.identity import Identity, fingerprint_for, peer_id_for, public_key_from_peer_id
from p2pnode.records import CONTESTED_KINDS, MAX_TTL_BY_KIND, RecordKind, record_key, sign_record

__all__ = [
    "CONTROL_FILE",
    "TOKEN_FILE",
    "ControlContext",
    "ControlService",
    "ControlStatistics",
    "build_app",
    "openapi",
    "read_token",
]

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # request bodies larger than this are refused (413)
MAX_TRUST = 32  # trust= parameters per request
WS_CLOSE_TIMEOUT = 2.0  # seconds a WebSocket client has to answer our close
LOOKUP_TIMEOUT = 20.0
KIND_NAMES = {kind.name.lower().replace("_", "-"): kind for kind in RecordKind}


@dataclass(frozen=True)
class ControlContext:
    """What the handlers reach: the runtime and the services they answer from."""

    node: Node
    identity: Identity
    dht: DhtService
    supernode: SupernodeService | None
    relays: RelaySearchService | None
    trusted: frozenset[bytes]


@dataclass(frozen=True)
class ControlStatistics:
    url: str
    requests: int
    unauthorized: int
    bad_requests: int
    websockets: int


class _Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.unauthorized = 0
        self.bad_requests = 0
        self.websockets = 0


class _BadRequestError(Exception):
    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


def _json(model: pydantic.BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def _address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ----------------------------------------------------------------- handlers


async def status(ctx: ControlContext, request: web.Request) -> web.Response:
    stats = ctx.dht.statistics()
    relay = None
    if ctx.supernode is not None:
        sn = ctx.supernode.statistics()
        chosen = ctx.relays.statistics().chosen if ctx.relays is not None else ()
        relay = RelayState(
            role=sn.role.value,
            reason=sn.reason,
            reachability=sn.reachability.value,
            relay_udp=[_address(a) for a in sn.relay_udp],
            load=sn.load,
            capacity=sn.capacity,
            accepting=sn.accepting,
            chosen_relays=[_address(a) for a in chosen],
        )
    services = [
        ServiceModel(
            name=s.name,
            state=s.state.value,
            reason=s.reason,
            failures=s.failures,
            restarts=s.restarts,
            statistics=snapshot_json(ctx.node.service(s.name).statistics()),
        )
        for s in ctx.node.status()
    ]
    answer = StatusAnswer(
        peer_id=ctx.identity.peer_id,
        fingerprint=ctx.identity.fingerprint,
        dht_address=_address(stats.address) if stats.address else "",
        uptime=ctx.node.statistics().uptime,
        table=TableModel(
            contacts=stats.dht.contacts,
            buckets_used=stats.dht.buckets_used,
            records=stats.dht.records,
            healthy=ctx.dht.node.core.healthy,
            datagrams_in=stats.dht.datagrams_in,
            datagrams_out=stats.dht.datagrams_out,
        ),
        relay=relay,
        services=services,
    )
    return _json(answer)


def _kind(text: str) -> RecordKind:
    kind = KIND_NAMES.get(text.lower())
    if kind is None:
        raise _BadRequestError(400, "unknown kind", f"choose one of: {', '.join(KIND_NAMES)}")
    return kind


async def _body(request: web.Request, model: type[RecordPutRequest]) -> RecordPutRequest:
    return await read_model(request, model, MAX_BODY, _BadRequestError)


async def record_put(ctx: ControlContext, request: web.Request) -> web.Response:
    body = await _body(request, RecordPutRequest)
    kind = _kind(body.kind)
    limit = MAX_TTL_BY_KIND[kind]
    if body.ttl > limit:
        raise _BadRequestError(400, "invalid request", f"ttl must be in 1..{limit} for {body.kind}")
    now = time.time()
    try:
        record = sign_record(
            ctx.identity,
            kind,
            body.subject,
            body.payload.encode("utf-8"),
            seq=body.seq if body.seq is not None else int(now),
            now=now,
            ttl=body.ttl,
        )
    except ValueError as error:
        raise _BadRequestError(400, "invalid record", str(error)) from None
    async with asyncio.timeout(LOOKUP_TIMEOUT):
        result = await ctx.dht.put(record)
    return _json(
        RecordPutAnswer(
            key=record.key.hex(),
            owner=ctx.identity.peer_id,
            seq=record.seq,
            expires_at=record.expires_at,
            stored=result.stored,
            contacted=result.contacted,
            rejected=list(result.rejected),
        )
    )


async def record_get(ctx: ControlContext, request: web.Request) -> web.Response:
    try:
        query = RecordQuery.model_validate(dict(request.query))
    except pydantic.ValidationError:
        raise _BadRequestError(400, "invalid query", "give kind, subject and maybe owner") from None
    kind = _kind(query.kind)
    owner = b""
    if query.owner:
        try:
            owner = public_key_from_peer_id(query.owner)
        except ValueError as error:
            raise _BadRequestError(400, "bad owner", str(error)) from None
    elif kind not in CONTESTED_KINDS:
        raise _BadRequestError(400, "owner needed", f"owner is needed for {query.kind} records")
    key = record_key(kind, owner, query.subject)
    async with asyncio.timeout(LOOKUP_TIMEOUT):
        result = await ctx.dht.get(key)
    records = [
        RecordModel(
            owner=peer_id_for(r.owner),
            fingerprint=fingerprint_for(r.owner),
            kind=r.kind.name.lower().replace("_", "-"),
            subject=r.subject,
            seq=r.seq,
            issued_at=r.issued_at,
            expires_at=r.expires_at,
            payload_hex=r.payload.hex(),
        )
        for r in result.records
        if not owner or r.owner == owner
    ]
    return _json(
        RecordsAnswer(
            key=key.hex(),
            records=records,
            hops=result.hops,
            queries=result.queries,
            elapsed=result.elapsed,
        )
    )


def _trusted(ctx: ControlContext, request: web.Request) -> frozenset[bytes]:
    given = request.query.getall("trust", [])
    if len(given) > MAX_TRUST:
        raise _BadRequestError(400, "too many trust parameters", f"at most {MAX_TRUST}")
    keys = set(ctx.trusted)
    for text in given:
        try:
            keys.add(public_key_from_peer_id(text))
        except ValueError:
            raise _BadRequestError(400, "bad trust", "not a verifier peer id") from None
    return frozenset(keys)


async def name_lookup(ctx: ControlContext, request: web.Request) -> web.Response:
    try:
        login = normalise_login(request.match_info["login"])
    except LoginError as error:
        raise _BadRequestError(400, "bad login", str(error)) from None
    directory = directory_of(ctx.dht, _trusted(ctx, request))
    resolution = await directory.resolve(RecordKind.NAME_CLAIM, login)
    return _json(resolution_answer(resolution, None))


async def enum_lookup(ctx: ControlContext, request: web.Request) -> web.Response:
    try:
        number = normalise_e164(request.match_info["number"])
    except ValueError as error:
        raise _BadRequestError(400, "bad number", str(error)) from None
    directory = directory_of(ctx.dht, _trusted(ctx, request))
    resolution = await directory.resolve(RecordKind.ENUM_ENTRY, number)
    return _json(resolution_answer(resolution, number))


async def relay_state(ctx: ControlContext, request: web.Request) -> web.Response:
    if ctx.supernode is None:
        raise _BadRequestError(404, "no supernode controller", "supernode.enabled is false")
    return web.json_response(snapshot_json(ctx.supernode.statistics()))


async def events(ctx: ControlContext, request: web.Request) -> web.StreamResponse:
    if not ctx.node.can_subscribe():  # bounded: a client cannot make us hold more streams
        raise _BadRequestError(503, "too many event streams", "try again later")
    socket = web.WebSocketResponse(heartbeat=30.0, timeout=WS_CLOSE_TIMEOUT)
    await socket.prepare(request)
    with ctx.node.subscribe() as queue:
        for service in ctx.node.status():  # the current state first
            await socket.send_json({"type": "ServiceStatus", **snapshot_json(service)})

        async def pump() -> None:
            while True:
                event = await queue.get()
                await socket.send_json(event_json(event))
                if isinstance(event, NodeStopping):  # do not hold up the node's stop
                    await socket.close(code=WSCloseCode.GOING_AWAY, message=b"node stopping")
                    return

        async with asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(pump())
            async for message in socket:  # ignore input; end when the client closes
                if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
            sender.cancel()
    return socket


Handler = Callable[[ControlContext, web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type[pydantic.BaseModel] | None
    request: type[pydantic.BaseModel] | None = None
    query: type[pydantic.BaseModel] | None = None


ROUTES = (
    Route("GET", "/api/status", status, "role, table health, relay load, services", StatusAnswer),
    Route(
        "POST", "/api/records", record_put, "sign with the node's identity and store",
        RecordPutAnswer, request=RecordPutRequest,
    ),
    Route(
        "GET", "/api/records", record_get, "look up and verify records", RecordsAnswer,
        query=RecordQuery,
    ),
    Route("GET", "/api/names/{login}", name_lookup, "resolve a login", NameAnswer),
    Route("GET", "/api/enum/{number}", enum_lookup, "resolve a phone number", NameAnswer),
    Route("GET", "/api/relay", relay_state, "the supernode role and relay counters", None),
    Route("GET", "/api/events", events, "WebSocket: service states, role changes", None),
    *(Route(*spec) for spec in PEER_ROUTES),  # reach: ping, presence, contacts (api_peer.py)
    *(Route(*spec) for spec in CONTACT_ROUTES),  # requests, settings, unread (api_contacts.py)
    *(Route(*spec) for spec in MESSAGING_ROUTES),  # messaging figures (api_messaging.py)
    *(Route(*spec) for spec in SIP_ROUTES),  # the SIP gateway (api_sip.py)
)  # fmt: skip


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document, schemas from the pydantic models of ``ROUTES``."""
    schemas: dict[str, Any] = {}

    def ref(model: type[pydantic.BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, Any] = {}
    error = {"application/json": {"schema": ref(ApiError)}}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "bad request", "content": error},
                "401": {"description": "no or wrong token"},
            },
        }
        if route.response is not None:
            operation["responses"]["200"]["content"] = {
                "application/json": {"schema": ref(route.response)}
            }
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.request)}},
            }
        parameters = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in route.path.split("/")
            if part.startswith("{")
        ]
        if route.query is not None:
            schema = route.query.model_json_schema()
            required = set(schema.get("required", []))
            parameters += [
                {"name": name, "in": "query", "required": name in required, "schema": prop}
                for name, prop in schema["properties"].items()
            ]
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "p2pnode control API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


def build_app(
    ctx: ControlContext, token: str, counters: _Counters | None = None
) -> web.Application:
    """The aiohttp application: token check first, then the route table."""
    count = counters or _Counters()
    expected = f"Bearer {token}".encode()
    refusals = RefusalLog(logger, time.monotonic)

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        count.requests += 1
        given = request.headers.get("Authorization", "")
        if not given and request.path == "/api/events":  # browsers cannot set headers
            given = "Bearer " + request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), expected):
            count.unauthorized += 1
            reason = "no-token" if given in ("", "Bearer ") else "wrong-token"
            refusals.refused("control-api", reason, request.remote or "-")
            return _json(ApiError(error="unauthorized", detail="give the control token"), 401)
        try:
            return await handler(request)
        except _BadRequestError as error:
            count.bad_requests += 1
            return _json(ApiError(error=error.error, detail=error.detail), error.status)
        except (TimeoutError, DirectoryTimeoutError):
            return _json(ApiError(error="network timeout"), 504)
        except web.HTTPException:
            raise
        except Exception as error:  # e.g. the DHT restarting: an answer, not a crash
            logger.warning("control API %s %s failed: %s", request.method, request.path, error)
            return _json(ApiError(error="internal error", detail=type(error).__name__), 500)

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)

    def bind(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            if route.handler is events:
                count.websockets += 1
            return await route.handler(ctx, request)

        return handle

    for route in ROUTES:
        app.router.add_route(route.method, route.path, bind(route))
    document = openapi()

    async def spec(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/api/openapi.json", spec)
    return app


class ControlService:
    """Runs the API on ``host:port`` (loopback) and writes the token and URL to the home."""

    name = "control"

    def __init__(self, home: Path, host: str, port: int) -> None:
        self.home = home
        self.host = host
        self.port = port
        self.ctx: ControlContext | None = None  # set by the assembler once services exist
        self.url = ""
        self._counters = _Counters()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        assert self.ctx is not None
        token = secrets.token_urlsafe(32)
        path = self.home / TOKEN_FILE
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        runner = web.AppRunner(
            build_app(self.ctx, token, self._counters), handle_signals=False, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://{_address((host, port))}"
        (self.home / CONTROL_FILE).write_text(json.dumps({"url": self.url, "pid": os.getpid()}))

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.home / CONTROL_FILE).unlink()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def statistics(self) -> ControlStatistics:
        c = self._counters
        return ControlStatistics(self.url, c.requests, c.unauthorized, c.bad_requests, c.websockets)

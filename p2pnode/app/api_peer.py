"""Control-API routes for reach: ping a peer, set our presence, contacts with live presence.

Kept apart from ``control.py`` (which registers ``PEER_ROUTES`` in its route
table, so the OpenAPI document lists them from these models): the handlers
answer from the peer app (``peer_services.PeerApp``), found by its service
name, so a node without ``[presence]`` answers 404 with the reason. Their
events (``PresenceChanged`` from the signalling, ``LinkOpened`` from the peer
app) reach the WebSocket through ``Node.emit`` like every other event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import pydantic
from aiohttp import web

from p2pnode.app.api_models import ApiError
from p2pnode.app.bodies import read_model
from p2pnode.app.browser_calls import MAX_BROWSER_SDP, page_ice_servers, page_media
from p2pnode.app.peer_calls import CallNotes, CallsNodeService, media_for
from p2pnode.app.peer_chat import ChatService
from p2pnode.app.peer_services import MAX_PINGS, PeerApp, PeerNotFoundError
from p2pnode.connectivity.contact import PresenceStatus
from p2pnode.connectivity.peerlink import PeerLinkError
from p2pnode.directory.lookup import DirectoryTimeoutError
from p2pnode.identity import peer_id_for, public_key_from_peer_id
from p2pnode.sessions.call import CallStateError
from p2pnode.sessions.call_config import CallMedia, CallUpdate
from p2pnode.sessions.store import Direction, MessageRow

if TYPE_CHECKING:
    from p2pnode.app.control import ControlContext

__all__ = [
    "PEER_ROUTES",
    "CallMediaRequest",
    "CallModel",
    "CallRequest",
    "CallsAnswer",
    "ContactAddRequest",
    "ContactModel",
    "ContactsAnswer",
    "HistoryQuery",
    "MessageModel",
    "MessageStatusAnswer",
    "MessagesAnswer",
    "PingAnswer",
    "PingRequest",
    "PresenceAnswer",
    "PresenceRequest",
    "ReadAnswer",
    "ReadRequest",
    "RouteSpec",
    "SendAnswer",
    "SendRequest",
]

M = TypeVar("M", bound=pydantic.BaseModel)
MAX_READ = 256  # message ids one read receipt request names
MAX_TEXT_CHARS = 4096  # a text through the API (the store takes up to 64 KiB)
MAX_PEER_BODY = 4 * MAX_TEXT_CHARS + 1024  # JSON escapes included


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class PingRequest(_Model):
    peer: str = pydantic.Field(min_length=1, max_length=128, description="login, peer id, contact")
    count: int = pydantic.Field(3, ge=1, le=MAX_PINGS, description="round trips to measure")


class PingAnswer(_Model):
    peer_id: str
    path: str = pydantic.Field(description='e.g. "direct host->host", "relayed via ID (udp, ours)"')
    direct: bool
    setup_ms: float = pydantic.Field(description="first offer sent -> data channel open")
    rtt_ms: list[float]


class PresenceRequest(_Model):
    status: Literal["online", "away", "busy"]
    note: str = pydantic.Field("", max_length=140)


class PresenceAnswer(_Model):
    status: str
    note: str


class ContactAddRequest(_Model):
    name: str = pydantic.Field(min_length=1, max_length=32, description="a-z 0-9 . _ -")
    peer: str = pydantic.Field(min_length=1, max_length=128, description="login or peer id")


class ContactModel(_Model):
    name: str
    peer_id: str
    online: bool | None = pydantic.Field(description="null: not known yet")
    status: str
    note: str


class ContactsAnswer(_Model):
    contacts: list[ContactModel]


class SendRequest(_Model):
    to: str = pydantic.Field(min_length=1, max_length=128, description="login, peer id, contact")
    text: str = pydantic.Field(min_length=1, max_length=MAX_TEXT_CHARS)


class SendAnswer(_Model):
    message_id: str
    peer_id: str


class MessageStatusAnswer(_Model):
    message_id: str
    queued: bool = pydantic.Field(description="still in the outbox (no delivered receipt yet)")
    state: str = pydantic.Field(description="queued, sent_online, held, delivered")
    copies: int = pydantic.Field(description="mailbox copies acknowledged")
    delivered: bool
    read: bool


class MessageModel(_Model):
    message_id: str
    peer_id: str
    incoming: bool
    seq: int
    text: str
    sent_at_ms: int
    chain_ok: bool
    request: bool = pydantic.Field(False, description="from a stranger (a contact request)")


class MessagesAnswer(_Model):
    messages: list[MessageModel]


class ReadRequest(_Model):
    peer: str = pydantic.Field(min_length=1, max_length=128, description="login, peer id, contact")
    message_ids: list[str] = pydantic.Field(max_length=MAX_READ, description="hex ids shown")


class ReadAnswer(_Model):
    marked: int = pydantic.Field(
        description="messages newly marked read: not unknown ids, another peer's, ones "
        "marked already, nor any while the peer is a stranger or blocked"
    )


class HistoryQuery(_Model):
    limit: int = pydantic.Field(100, ge=1, le=1000)


class CallMediaRequest(_Model):
    tone_hz: float | None = pydantic.Field(None, gt=0, lt=8000, description="send a tone")
    play: str | None = pydantic.Field(None, max_length=4096, description="send a WAV (absolute)")
    record: str | None = pydantic.Field(None, max_length=4096, description="record (absolute)")
    video: bool = False
    sdp: str | None = pydantic.Field(
        None, min_length=1, max_length=MAX_BROWSER_SDP,
        description="the page's own offer/answer: the page is the media endpoint",
    )  # fmt: skip


class CallRequest(CallMediaRequest):
    to: str = pydantic.Field(min_length=1, max_length=128, description="login, peer id, contact")


class CallModel(_Model):
    call_id: str
    peer_id: str
    direction: str
    state: str
    codec: str | None
    path: str | None
    detail: str
    dtmf: str = pydantic.Field("", description="digits the peer keyed, oldest first")
    relayed_caller: str | None = pydantic.Field(
        None, description="the caller a gateway relayed (a SIP From); None: the peer called"
    )
    caller_verified: bool = pydantic.Field(False, description="the gateway vouched for it")


class CallsAnswer(_Model):
    calls: list[CallModel]


class IceServerModel(_Model):
    urls: str
    username: str | None
    credential: str | None


class IceAnswer(_Model):
    ice_servers: list[IceServerModel]


class CallSdpAnswer(_Model):
    call_id: str
    sdp: str | None = pydantic.Field(description="the peer's latest offer or answer")


class _RefusedError(Exception):
    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


def _json(model: pydantic.BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def _app(ctx: ControlContext) -> PeerApp:
    try:
        service = ctx.node.service(PeerApp.name)
    except KeyError:
        raise _RefusedError(404, "presence not enabled", "set [presence] enabled = true") from None
    assert isinstance(service, PeerApp)
    return service


async def _body(request: web.Request, model: type[M]) -> M:
    return await read_model(request, model, MAX_PEER_BODY, _RefusedError)


async def _resolve(app: PeerApp, text: str) -> str:
    try:
        return await app.resolve(text)
    except PeerNotFoundError as error:
        raise _RefusedError(404, "peer not found", str(error)) from None
    except DirectoryTimeoutError:
        raise _RefusedError(504, "network timeout", "the directory did not answer") from None


def _contact(app: PeerApp, name: str, peer_id: str) -> ContactModel:
    seen = app.presence_of(peer_id)
    if seen is None:
        return ContactModel(name=name, peer_id=peer_id, online=None, status="unknown", note="")
    return ContactModel(
        name=name, peer_id=peer_id, online=seen.online, status=seen.status, note=seen.note
    )


Handler = Callable[["ControlContext", web.Request], Awaitable[web.StreamResponse]]
# (method, path, handler, summary, response, request, query): control.Route's fields,
# the shape of a row in PEER_ROUTES and the route tables beside it (api_contacts.py,
# api_messaging.py) that control.py turns into Routes.
RouteSpec = tuple[
    str,
    str,
    Handler,
    str,
    type[pydantic.BaseModel] | None,
    type[pydantic.BaseModel] | None,
    type[pydantic.BaseModel] | None,
]


def _guarded(
    handler: Callable[[PeerApp, web.Request], Awaitable[web.Response]],
) -> Handler:
    async def handle(ctx: ControlContext, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(_app(ctx), request)
        except _RefusedError as refused:
            return _json(ApiError(error=refused.error, detail=refused.detail), refused.status)

    handle.__name__ = handler.__name__
    return handle


async def ping(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, PingRequest)
    peer_id = await _resolve(app, body.peer)
    try:
        result = await app.ping(peer_id, body.count)
    except PeerNotFoundError as error:
        raise _RefusedError(404, "peer unreachable", str(error)) from None
    except PeerLinkError as error:
        raise _RefusedError(504, "link failed", str(error)) from None
    return _json(
        PingAnswer(
            peer_id=result.peer,
            path=result.path,
            direct=result.direct,
            setup_ms=result.setup_ms,
            rtt_ms=list(result.rtt_ms),
        )
    )


async def presence_set(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, PresenceRequest)
    app.set_presence(PresenceStatus[body.status.upper()], body.note)
    return _json(PresenceAnswer(status=body.status, note=body.note))


async def presence_get(app: PeerApp, request: web.Request) -> web.Response:
    return _json(PresenceAnswer(status=app.status.name.lower(), note=app.note))


async def contacts_list(app: PeerApp, request: web.Request) -> web.Response:
    return _json(
        ContactsAnswer(contacts=[_contact(app, c.name, c.peer_id) for c in app.contacts()])
    )


async def contact_add(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, ContactAddRequest)
    peer_id = await _resolve(app, body.peer)
    try:
        await app.add_contact(body.name, peer_id)
    except ValueError as error:
        raise _RefusedError(400, "bad contact", str(error)) from None
    return _json(_contact(app, body.name, peer_id))


async def contact_remove(app: PeerApp, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not app.remove_contact(name):
        raise _RefusedError(404, "no such contact")
    return _json(PresenceAnswer(status="removed", note=name))


def _chat(app: PeerApp) -> ChatService:
    try:
        service = app.node_services(ChatService.name)
    except KeyError:
        raise _RefusedError(404, "chat not enabled", "set [chat] enabled = true") from None
    assert isinstance(service, ChatService)
    if service.messaging is None:
        raise _RefusedError(503, "chat not running", "the chat service is (re)starting")
    return service


def _message(row: MessageRow, request: bool = False) -> MessageModel:
    return MessageModel(
        message_id=row.message_id.hex(),
        peer_id=peer_id_for(row.peer),
        incoming=row.direction is Direction.IN,
        seq=row.seq,
        text=row.text,
        sent_at_ms=row.sent_at_ms,
        chain_ok=row.chain_ok,
        request=request,
    )


async def send(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, SendRequest)
    chat = _chat(app)
    peer_id = await _resolve(app, body.to)
    try:
        message_id = await chat.send(public_key_from_peer_id(peer_id), body.text)
    except LookupError as error:
        raise _RefusedError(404, "no prekey bundle", str(error)) from None
    except ValueError as error:
        raise _RefusedError(400, "message refused", str(error)) from None
    return _json(SendAnswer(message_id=message_id.hex(), peer_id=peer_id))


async def message_status(app: PeerApp, request: web.Request) -> web.Response:
    chat = _chat(app)
    text = request.match_info["message_id"]
    try:
        message_id = bytes.fromhex(text)
    except ValueError:
        raise _RefusedError(400, "bad message id", "hex expected") from None
    status = chat.status(message_id)
    if status.state is None:
        state = "delivered" if status.delivered else "unknown"
    else:
        state = status.state.name.lower()
    return _json(
        MessageStatusAnswer(
            message_id=text,
            queued=status.queued,
            state=state,
            copies=status.copies,
            delivered=status.delivered,
            read=status.read,
        )
    )


async def inbox(app: PeerApp, request: web.Request) -> web.Response:
    chat = _chat(app)
    messages = [_message(entry.message, entry.request) for entry in chat.inbox]
    return _json(MessagesAnswer(messages=messages))


async def mark_read(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, ReadRequest)
    chat = _chat(app)
    try:
        ids = tuple(bytes.fromhex(text) for text in body.message_ids)
    except ValueError:
        raise _RefusedError(400, "bad message id", "hex expected") from None
    peer_id = await _resolve(app, body.peer)
    marked = await chat.read(public_key_from_peer_id(peer_id), ids) if ids else 0
    return _json(ReadAnswer(marked=marked))


async def history(app: PeerApp, request: web.Request) -> web.Response:
    chat = _chat(app)
    try:
        query = HistoryQuery.model_validate(dict(request.query))
    except pydantic.ValidationError:
        raise _RefusedError(400, "invalid request", "limit: 1-1000") from None
    peer_id = await _resolve(app, request.match_info["peer"])
    rows = chat.history(public_key_from_peer_id(peer_id), query.limit)
    return _json(MessagesAnswer(messages=[_message(row) for row in rows]))


def _calls(app: PeerApp) -> CallsNodeService:
    try:
        service = app.node_services(CallsNodeService.name)
    except KeyError:
        raise _RefusedError(404, "calls not enabled", "set [calls] enabled = true") from None
    assert isinstance(service, CallsNodeService)
    if service.calls is None:
        raise _RefusedError(503, "calls not running", "the call service is (re)starting")
    return service


def _absolute(text: str | None, what: str) -> Path | None:
    if text is None:
        return None
    path = Path(text)
    if not path.is_absolute():
        raise _RefusedError(400, "invalid request", f"{what}: an absolute path is needed")
    return path


def _media(body: CallMediaRequest) -> CallMedia:
    if body.sdp is not None:
        if len(body.sdp.encode()) > MAX_BROWSER_SDP:
            raise _RefusedError(413, "sdp too large", f"at most {MAX_BROWSER_SDP} bytes")
        return page_media(body.sdp, _absolute(body.record, "record"))
    play = _absolute(body.play, "play")
    if play is not None and not play.is_file():
        raise _RefusedError(400, "invalid request", "play: no such file")
    return media_for(body.tone_hz, play, _absolute(body.record, "record"), body.video)


def _call_model(update: CallUpdate, notes: CallNotes | None = None) -> CallModel:
    notes = notes or CallNotes()
    return CallModel(
        call_id=update.call_id.hex(),
        peer_id=update.peer,
        direction=update.direction.value,
        state=update.state.value,
        codec=update.codec,
        path=update.path,
        detail=update.detail,
        dtmf=notes.digits,
        relayed_caller=notes.relayed_caller,
        caller_verified=notes.caller_verified,
    )


def _call_id(request: web.Request) -> bytes:
    try:
        return bytes.fromhex(request.match_info["call_id"])
    except ValueError:
        raise _RefusedError(400, "bad call id", "hex expected") from None


def _last(calls: CallsNodeService, call_id: bytes) -> CallModel:
    update = calls.last.get(call_id)
    if update is None:
        raise _RefusedError(404, "no such call")
    return _call_model(update, calls.notes.get(call_id))


async def call_place(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, CallRequest)
    calls = _calls(app)
    peer_id = await _resolve(app, body.to)
    call_id = await calls.service().dial(peer_id, _media(body))
    for _ in range(50):  # the first update is reported right after the dial
        if call_id in calls.last:
            break
        await asyncio.sleep(0.01)
    return _json(_last(calls, call_id))


async def calls_list(app: PeerApp, request: web.Request) -> web.Response:
    calls = _calls(app)
    return _json(
        CallsAnswer(calls=[_call_model(u, calls.notes.get(u.call_id)) for u in calls.last.values()])
    )


async def call_answer(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, CallMediaRequest)
    calls, call_id = _calls(app), _call_id(request)
    try:
        await calls.service().answer(call_id, _media(body))
    except (KeyError, CallStateError) as error:
        raise _RefusedError(409, "cannot answer", type(error).__name__) from None
    return _json(_last(calls, call_id))


async def call_ice(app: PeerApp, request: web.Request) -> web.Response:
    _calls(app)
    link = await app.link_config()
    servers = [
        IceServerModel(urls=s.urls, username=s.username, credential=s.credential)
        for s in page_ice_servers(link.ice)
    ]
    return _json(IceAnswer(ice_servers=servers))


async def call_sdp(app: PeerApp, request: web.Request) -> web.Response:
    calls, call_id = _calls(app), _call_id(request)
    try:
        sdp = calls.service().remote_sdp(call_id)
    except KeyError:
        raise _RefusedError(404, "no such call") from None
    return _json(CallSdpAnswer(call_id=call_id.hex(), sdp=sdp))


async def call_hangup(app: PeerApp, request: web.Request) -> web.Response:
    calls, call_id = _calls(app), _call_id(request)
    try:
        await calls.service().hangup(call_id)
    except (KeyError, CallStateError) as error:
        raise _RefusedError(409, "cannot hang up", type(error).__name__) from None
    return _json(_last(calls, call_id))


PEER_ROUTES: tuple[RouteSpec, ...] = (
    ("POST", "/api/ping", _guarded(ping), "open a link, report path, set-up and RTT",
     PingAnswer, PingRequest, None),
    ("GET", "/api/presence", _guarded(presence_get), "our status", PresenceAnswer, None, None),
    ("PUT", "/api/presence", _guarded(presence_set), "set our status for our watchers",
     PresenceAnswer, PresenceRequest, None),
    ("GET", "/api/contacts", _guarded(contacts_list), "contacts with live presence",
     ContactsAnswer, None, None),
    ("POST", "/api/contacts", _guarded(contact_add), "add (or rename) a contact, watch it",
     ContactModel, ContactAddRequest, None),
    ("DELETE", "/api/contacts/{name}", _guarded(contact_remove), "forget a contact",
     PresenceAnswer, None, None),
    ("POST", "/api/messages", _guarded(send), "send a text (online, else mailboxes)",
     SendAnswer, SendRequest, None),
    ("GET", "/api/messages/{message_id}", _guarded(message_status),
     "outbox state, mailbox copies, receipts", MessageStatusAnswer, None, None),
    ("GET", "/api/inbox", _guarded(inbox), "messages shown since the node started",
     MessagesAnswer, None, None),
    ("GET", "/api/history/{peer}", _guarded(history), "one conversation, oldest first",
     MessagesAnswer, None, HistoryQuery),
    ("POST", "/api/read", _guarded(mark_read), "mark read here, tell the sender (once each)",
     ReadAnswer, ReadRequest, None),
    ("POST", "/api/calls", _guarded(call_place), "place a call (tone, WAV or silence)",
     CallModel, CallRequest, None),
    ("GET", "/api/calls", _guarded(calls_list), "recent calls and their last state",
     CallsAnswer, None, None),
    ("GET", "/api/calls/ice", _guarded(call_ice),
     "ICE servers for the page's own connection (our relays' STUN/TURN, its credentials)",
     IceAnswer, None, None),
    ("GET", "/api/calls/{call_id}/sdp", _guarded(call_sdp),
     "the peer's offer or answer, for a page that is the media endpoint",
     CallSdpAnswer, None, None),
    ("POST", "/api/calls/{call_id}/answer", _guarded(call_answer), "answer a ringing call",
     CallModel, CallMediaRequest, None),
    ("POST", "/api/calls/{call_id}/hangup", _guarded(call_hangup), "hang up or cancel",
     CallModel, None, None),
)  # fmt: skip

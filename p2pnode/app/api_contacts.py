"""Control-API routes for contact requests, reach settings, unread counts and mailboxes.

Beside ``api_peer`` (whose helpers they share) and registered by ``control.py``
the same way: the peer app answers (``peer_services.PeerApp`` with its
``peer_contacts.RequestBook``), so a node without ``[presence]`` answers 404 with
the reason. The node, not the page, keeps all of it: requests and settings in
the home, unread counts in the chat store (a reloaded page shows the same).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import pydantic
from aiohttp import web

from p2pnode.app.api_peer import (
    ContactModel,
    RouteSpec,
    _body,
    _chat,
    _contact,
    _guarded,
    _json,
    _RefusedError,
)
from p2pnode.app.mailbox_state import format_mailbox
from p2pnode.app.peer_calls import CallsNodeService
from p2pnode.app.peer_chat import ChatService
from p2pnode.app.peer_contacts import ContactRequest, PresenceVisibility, ReachSettings
from p2pnode.app.peer_services import PeerApp
from p2pnode.identity import peer_id_for, public_key_from_peer_id
from p2pnode.sessions.call_config import NonContactPolicy

__all__ = [
    "CONTACT_ROUTES",
    "AcceptRequest",
    "FormerMailboxModel",
    "MailboxModel",
    "MailboxesAnswer",
    "RequestModel",
    "RequestsAnswer",
    "SettingsAnswer",
    "SettingsRequest",
    "UnreadAnswer",
    "UnreadModel",
]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class RequestModel(_Model):
    peer_id: str
    first_at: float
    last_at: float
    messages: int = pydantic.Field(description="texts it sent (shown once accepted)")
    calls: int = pydantic.Field(description="calls it placed")
    preview: str = pydantic.Field(description="its last text, at most 140 characters")


class RequestsAnswer(_Model):
    requests: list[RequestModel]
    blocked: list[str] = pydantic.Field(description="peer ids declined (blocked)")


class AcceptRequest(_Model):
    name: str = pydantic.Field(min_length=1, max_length=32, description="a-z 0-9 . _ -")


class SettingsRequest(_Model):
    presence_visibility: Literal["everyone", "contacts", "nobody"]
    who_may_call: Literal["ring", "request", "refuse"] | None = pydantic.Field(
        None,
        description="strangers' calls: ring (anyone), request (contacts; others wait as "
        "requests), refuse (contacts only); null: as [calls] non_contacts",
    )
    auto_answer: bool | None = pydantic.Field(
        None, description="answer calls unattended (null: as [calls] auto_answer)"
    )


class SettingsAnswer(_Model):
    presence_visibility: str
    who_may_call: str
    who_may_call_from: Literal["settings", "config"]
    auto_answer: bool
    auto_answer_from: Literal["settings", "config"]


class UnreadModel(_Model):
    peer_id: str
    unread: int


class UnreadAnswer(_Model):
    conversations: list[UnreadModel]


def _request_model(request: ContactRequest) -> RequestModel:
    return RequestModel(
        peer_id=request.peer_id,
        first_at=request.first_at,
        last_at=request.last_at,
        messages=request.messages,
        calls=request.calls,
        preview=request.preview,
    )


def _requests(app: PeerApp) -> RequestsAnswer:
    return RequestsAnswer(
        requests=[_request_model(r) for r in app.book.pending()], blocked=list(app.book.blocked())
    )


def _peer_id(request: web.Request) -> str:
    text = request.match_info["peer_id"]
    try:
        public_key_from_peer_id(text)
    except ValueError:
        raise _RefusedError(400, "bad peer id", "52 characters expected") from None
    return text


async def requests_list(app: PeerApp, request: web.Request) -> web.Response:
    return _json(_requests(app))


async def request_accept(app: PeerApp, request: web.Request) -> web.Response:
    peer_id = _peer_id(request)
    body = await _body(request, AcceptRequest)
    if not any(r.peer_id == peer_id for r in app.book.pending()):
        raise _RefusedError(404, "no such request")
    try:
        await app.add_contact(body.name, peer_id)  # takes the request off the list
    except ValueError as error:
        raise _RefusedError(400, "bad contact", str(error)) from None
    return _json(_contact(app, body.name, peer_id))


async def request_decline(app: PeerApp, request: web.Request) -> web.Response:
    peer_id = _peer_id(request)
    if app.is_contact(peer_id):
        raise _RefusedError(409, "a contact", "remove the contact first")
    try:
        app.book.block(peer_id)
    except ValueError as error:
        raise _RefusedError(507, "too many blocked peers", str(error)) from None
    return _json(_requests(app))


async def unblock(app: PeerApp, request: web.Request) -> web.Response:
    if not app.book.unblock(_peer_id(request)):
        raise _RefusedError(404, "not blocked")
    return _json(_requests(app))


def _calls(app: PeerApp) -> CallsNodeService | None:
    try:
        service = app.node_services(CallsNodeService.name)
    except KeyError:
        return None
    return service if isinstance(service, CallsNodeService) else None


def _settings(app: PeerApp) -> SettingsAnswer:
    calls = _calls(app)
    configured = NonContactPolicy(calls.section.non_contacts) if calls else NonContactPolicy.RING
    settings = app.book.settings
    return SettingsAnswer(
        presence_visibility=settings.presence_visibility.value,
        who_may_call=app.call_policy(configured).value,
        who_may_call_from="config" if settings.who_may_call is None else "settings",
        auto_answer=app.auto_answer(calls.section.auto_answer if calls else False),
        auto_answer_from="config" if settings.auto_answer is None else "settings",
    )


async def settings_get(app: PeerApp, request: web.Request) -> web.Response:
    return _json(_settings(app))


async def settings_set(app: PeerApp, request: web.Request) -> web.Response:
    body = await _body(request, SettingsRequest)
    app.book.set_settings(
        ReachSettings(
            PresenceVisibility(body.presence_visibility),
            None if body.who_may_call is None else NonContactPolicy(body.who_may_call),
            body.auto_answer,
        )
    )
    app.apply_settings()
    return _json(_settings(app))


async def unread(app: PeerApp, request: web.Request) -> web.Response:
    counts = _chat(app).unread()
    return _json(
        UnreadAnswer(
            conversations=[
                UnreadModel(peer_id=peer_id_for(peer), unread=n)
                for peer, n in sorted(counts.items())
            ]
        )
    )


class MailboxModel(_Model):
    peer_id: str = pydantic.Field(description="the mailbox supernode")
    address: str = pydantic.Field(description="HOST:PORT of its mailbox server")
    pinned: bool = pydantic.Field(description="named in [chat] mailboxes; else chosen by the node")
    since: float = pydantic.Field(description="unix time it joined our list")
    reachable: bool | None = pydantic.Field(
        description="the node's last TCP check of it (null: not checked yet)"
    )
    checked_at: float | None = pydantic.Field(description="unix time of that check")


class FormerMailboxModel(_Model):
    peer_id: str
    address: str
    drained_until: float | None = pydantic.Field(description="unix time; null: no end known")


class MailboxesAnswer(_Model):
    mailboxes: list[MailboxModel] = pydantic.Field(description="named in our signed list")
    former: list[FormerMailboxModel] = pydantic.Field(
        description="no longer named, still drained (they may hold our mail)"
    )


def _mailboxes_answer(chat: ChatService) -> MailboxesAnswer:
    former = [
        FormerMailboxModel(
            peer_id=peer_id_for(entry.key),
            address=format_mailbox(entry).partition("@")[2],
            drained_until=None if math.isinf(until) else until,
        )
        for entry, until in chat.former_mailboxes()
    ]
    views = [MailboxModel.model_validate(dataclasses.asdict(v)) for v in chat.mailbox_views()]
    return MailboxesAnswer(mailboxes=views, former=former)


async def mailboxes(app: PeerApp, request: web.Request) -> web.Response:
    return _json(_mailboxes_answer(_chat(app)))


async def mailboxes_check(app: PeerApp, request: web.Request) -> web.Response:
    chat = _chat(app)
    chat.recheck_mailboxes()
    return _json(_mailboxes_answer(chat))


CONTACT_ROUTES: tuple[RouteSpec, ...] = (
    ("GET", "/api/contacts/requests", _guarded(requests_list),
     "strangers who wrote or called, the latest first", RequestsAnswer, None, None),
    ("POST", "/api/contacts/requests/{peer_id}/accept", _guarded(request_accept),
     "make a stranger a contact (its conversation is shown)", ContactModel, AcceptRequest, None),
    ("POST", "/api/contacts/requests/{peer_id}/decline", _guarded(request_decline),
     "block a stranger: its messages and calls are dropped", RequestsAnswer, None, None),
    ("POST", "/api/contacts/blocked/{peer_id}/unblock", _guarded(unblock),
     "lift a block: its next message or call is a request again", RequestsAnswer, None, None),
    ("GET", "/api/settings", _guarded(settings_get),
     "presence visibility, who may call, auto-answer", SettingsAnswer, None, None),
    ("PUT", "/api/settings", _guarded(settings_set),
     "set presence visibility and who may call (kept in the home)",
     SettingsAnswer, SettingsRequest, None),
    ("GET", "/api/unread", _guarded(unread), "unread messages per conversation (kept by the node)",
     UnreadAnswer, None, None),
    ("GET", "/api/mailboxes", _guarded(mailboxes),
     "our mailboxes: which supernodes, since when, reachable; the former ones still drained",
     MailboxesAnswer, None, None),
    ("POST", "/api/mailboxes/check", _guarded(mailboxes_check),
     "check our mailboxes now (the answer is the list before; MailboxesChanged follows)",
     MailboxesAnswer, None, None),
)  # fmt: skip

"""`p2pnode ping`, `p2pnode presence`, `p2pnode contacts`: reach through the running node.

These only make sense with a node that stays attached to its homes (a link
needs someone to answer it, a watch needs a home to notify us), so they ask the
running node of the home (``[presence] enabled``) and never join themselves.
"""

from __future__ import annotations

import argparse
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pydantic

from p2pnode.app.api_peer import (
    CallMediaRequest,
    CallModel,
    CallRequest,
    CallsAnswer,
    ContactAddRequest,
    ContactModel,
    ContactsAnswer,
    MessageModel,
    MessagesAnswer,
    MessageStatusAnswer,
    PingAnswer,
    PingRequest,
    PresenceAnswer,
    PresenceRequest,
    SendAnswer,
    SendRequest,
)
from p2pnode.cli import chat as chat_cli
from p2pnode.cli import contacts as contacts_cli
from p2pnode.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    CliError,
    NetworkFailureError,
    add_home_argument,
)
from p2pnode.cli.control_client import RunningNode, running_node
from p2pnode.identity import default_home

__all__ = [
    "describe_call",
    "describe_contact",
    "describe_delivery",
    "describe_message",
    "describe_ping",
    "register",
]


def _node(args: argparse.Namespace) -> RunningNode:
    home = args.home if args.home is not None else default_home()
    node = running_node(home)
    if node is None:
        raise NetworkFailureError(
            f"no node is running in {home} (start one with [presence] enabled: p2pnode run)"
        )
    return node


def _print(args: argparse.Namespace, answer: pydantic.BaseModel, lines: list[str]) -> int:
    print(answer.model_dump_json(indent=2) if args.json else "\n".join(lines))
    return EXIT_OK


def describe_ping(answer: PingAnswer) -> list[str]:
    rtts = ", ".join(f"{r:.1f}" for r in answer.rtt_ms)
    best = min(answer.rtt_ms)
    return [
        f"link to {answer.peer_id}: {answer.path}",
        f"set-up {answer.setup_ms:.0f} ms (offer sent -> channel open)",
        f"rtt {best:.1f} ms (min of {len(answer.rtt_ms)}: {rtts})",
    ]


def describe_contact(contact: ContactModel) -> str:
    if contact.online is None:
        state = "unknown (no CONTACT record yet)"
    elif not contact.online:
        state = "offline"
    else:
        state = contact.status + (f" ({contact.note})" if contact.note else "")
    return f"{contact.name:<16} {state:<24} {contact.peer_id}"


def cmd_ping(args: argparse.Namespace) -> int:
    answer = _node(args).request(
        "POST", "/api/ping", PingAnswer, body=PingRequest(peer=args.peer, count=args.count)
    )
    return _print(args, answer, describe_ping(answer))


def cmd_presence_set(args: argparse.Namespace) -> int:
    body = PresenceRequest(status=args.status, note=args.note)
    answer = _node(args).request("PUT", "/api/presence", PresenceAnswer, body=body)
    note = f" ({answer.note})" if answer.note else ""
    return _print(args, answer, [f"presence: {answer.status}{note}"])


def cmd_presence_show(args: argparse.Namespace) -> int:
    answer = _node(args).request("GET", "/api/presence", PresenceAnswer)
    note = f" ({answer.note})" if answer.note else ""
    return _print(args, answer, [f"presence: {answer.status}{note}"])


def cmd_contacts_add(args: argparse.Namespace) -> int:
    body = ContactAddRequest(name=args.name, peer=args.peer)
    answer = _node(args).request("POST", "/api/contacts", ContactModel, body=body)
    return _print(args, answer, [describe_contact(answer)])


def cmd_contacts_list(args: argparse.Namespace) -> int:
    answer = _node(args).request("GET", "/api/contacts", ContactsAnswer)
    lines = [describe_contact(c) for c in answer.contacts] or ["no contacts"]
    return _print(args, answer, lines)


def cmd_contacts_remove(args: argparse.Namespace) -> int:
    answer = _node(args).request("DELETE", f"/api/contacts/{args.name}", PresenceAnswer)
    return _print(args, answer, [f"removed {args.name}"])


def describe_delivery(status: MessageStatusAnswer) -> str:
    if status.delivered:
        return "delivered" + (", read" if status.read else "")
    if status.state == "sent_online":
        return "handed to the peer's node online, waiting for the receipt"
    if status.state == "held":
        return f"queued, {status.copies} copies held in mailboxes"
    return "queued in the outbox (no path took it yet; retrying)"


def describe_message(message: MessageModel) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(message.sent_at_ms / 1000))
    arrow = "<-" if message.incoming else "->"
    gap = "" if message.chain_ok else " [gap before this message]"
    return f"{when} {arrow} {message.peer_id[:12]}: {message.text}{gap}"


def cmd_send(args: argparse.Namespace) -> int:
    node = _node(args)
    sent = node.request(
        "POST", "/api/messages", SendAnswer, body=SendRequest(to=args.to, text=args.text)
    )
    path = f"/api/messages/{sent.message_id}"
    deadline = time.monotonic() + args.wait
    status = node.request("GET", path, MessageStatusAnswer)
    while status.state == "queued" and not status.delivered and time.monotonic() < deadline:
        time.sleep(0.2)
        status = node.request("GET", path, MessageStatusAnswer)
    lines = [f"message {sent.message_id} to {sent.peer_id}: {describe_delivery(status)}"]
    return _print(args, status, lines)


def cmd_inbox(args: argparse.Namespace) -> int:
    answer = _node(args).request("GET", "/api/inbox", MessagesAnswer)
    lines = [describe_message(m) for m in answer.messages] or ["no messages since the node started"]
    return _print(args, answer, lines)


def cmd_history(args: argparse.Namespace) -> int:
    peer = urllib.parse.quote(args.peer, safe="")
    answer = _node(args).request(
        "GET", f"/api/history/{peer}", MessagesAnswer, query=[("limit", str(args.limit))]
    )
    lines = [describe_message(m) for m in answer.messages] or ["no messages"]
    return _print(args, answer, lines)


LIVE_CALL_STATES = ("new", "dialling", "ringing-remote", "offered", "ringing-local", "requested")
CALL_WAIT = 60.0  # seconds `call` waits for an answer (the callee's no-answer time is 45 s)


def describe_call(call: CallModel) -> str:
    extra = ", ".join(x for x in (call.codec, call.path, call.detail) if x)
    return f"call {call.call_id[:8]} {call.direction} {call.peer_id[:12]}: {call.state}" + (
        f" ({extra})" if extra else ""
    )


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


def _call_state(node: RunningNode, call_id: str) -> CallModel:
    answer = node.request("GET", "/api/calls", CallsAnswer)
    for call in answer.calls:
        if call.call_id == call_id:
            return call
    raise NetworkFailureError("the node forgot the call")


def cmd_call(args: argparse.Namespace) -> int:
    node = _node(args)
    body = CallRequest(
        to=args.to, tone_hz=args.tone, play=_absolute(args.play),
        record=_absolute(args.record), video=args.video, sdp=None,
    )  # fmt: skip
    call = node.request("POST", "/api/calls", CallModel, body=body)
    print(describe_call(call), flush=True)
    deadline = time.monotonic() + CALL_WAIT
    while call.state in LIVE_CALL_STATES and time.monotonic() < deadline:
        time.sleep(0.1)
        call = _call_state(node, call.call_id)
    print(describe_call(call), flush=True)
    if call.state != "answered":
        if call.state in LIVE_CALL_STATES:
            node.request("POST", f"/api/calls/{call.call_id}/hangup", CallModel)
        return EXIT_NEGATIVE
    time.sleep(args.duration)
    call = node.request("POST", f"/api/calls/{call.call_id}/hangup", CallModel)
    print(describe_call(_call_state(node, call.call_id)), flush=True)
    return EXIT_OK


def cmd_answer(args: argparse.Namespace) -> int:
    node = _node(args)
    ringing = [
        c for c in node.request("GET", "/api/calls", CallsAnswer).calls
        if c.state in ("ringing-local", "requested")
    ]  # fmt: skip
    if not ringing:
        raise CliError("no call is ringing")
    body = CallMediaRequest(
        tone_hz=args.tone, play=_absolute(args.play), record=_absolute(args.record), sdp=None
    )
    call = node.request("POST", f"/api/calls/{ringing[-1].call_id}/answer", CallModel, body=body)
    print(describe_call(call))
    return EXIT_OK


def cmd_hangup(args: argparse.Namespace) -> int:
    node = _node(args)
    live = [
        c for c in node.request("GET", "/api/calls", CallsAnswer).calls
        if c.state in (*LIVE_CALL_STATES, "answered")
    ]  # fmt: skip
    if not live:
        raise CliError("no call to hang up")
    call = node.request("POST", f"/api/calls/{live[-1].call_id}/hangup", CallModel)
    print(describe_call(call))
    return EXIT_OK


def _media_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tone", type=float, metavar="HZ", help="send a sine tone")
    source.add_argument("--play", metavar="FILE", help="send a WAV file")
    parser.add_argument("--record", metavar="FILE", help="record what we hear (WAV)")


def _common(parser: argparse.ArgumentParser) -> None:
    add_home_argument(parser)
    parser.add_argument("--json", action="store_true", help="the API's JSON answer")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `ping`, `presence`, `contacts`, `send`, `inbox`, `history`, `call`, `answer`,
    `hangup`."""
    ping = subparsers.add_parser(
        "ping",
        help="open a link to a peer: path, set-up time, RTT",
        description="Open a peer link (sealed signalling through the peer's homes, ICE "
        "through our own supernodes) and print its path, set-up time and RTT.",
    )
    ping.add_argument("peer", help="login, peer id or contact name")
    ping.add_argument("--count", type=int, default=3, help="round trips (1-10)")
    _common(ping)
    ping.set_defaults(func=cmd_ping)

    presence = subparsers.add_parser("presence", help="our status as our watchers see it")
    inner = presence.add_subparsers(dest="presence_command", metavar="ACTION", required=True)
    set_ = inner.add_parser("set", help="set our status")
    set_.add_argument("status", choices=("online", "away", "busy"))
    set_.add_argument("--note", default="", help="a short note (140 bytes)")
    _common(set_)
    set_.set_defaults(func=cmd_presence_set)
    show = inner.add_parser("show", help="our status")
    _common(show)
    show.set_defaults(func=cmd_presence_show)

    contacts = subparsers.add_parser("contacts", help="contacts and their live presence")
    inner = contacts.add_subparsers(dest="contacts_command", metavar="ACTION", required=True)
    add = inner.add_parser("add", help="add a contact (and watch its presence)")
    add.add_argument("name", help="a local name: a-z 0-9 . _ -")
    add.add_argument("peer", help="login or peer id")
    _common(add)
    add.set_defaults(func=cmd_contacts_add)
    listing = inner.add_parser("list", help="contacts with live presence")
    _common(listing)
    listing.set_defaults(func=cmd_contacts_list)
    remove = inner.add_parser("remove", help="forget a contact")
    remove.add_argument("name")
    _common(remove)
    remove.set_defaults(func=cmd_contacts_remove)
    contacts_cli.add_request_commands(inner)  # requests, accept, decline, unblock

    send = subparsers.add_parser(
        "send",
        help="send an end-to-end encrypted text",
        description="Send a text: online through the peer's homes, else deposited in its "
        "mailboxes; the outbox keeps it until the peer's delivered receipt.",
    )
    send.add_argument("to", help="login, peer id or contact name")
    send.add_argument("text")
    send.add_argument("--wait", type=float, default=5.0, help="seconds to wait for a path")
    _common(send)
    send.set_defaults(func=cmd_send)
    inbox = subparsers.add_parser("inbox", help="messages shown since the node started")
    _common(inbox)
    inbox.set_defaults(func=cmd_inbox)
    history = subparsers.add_parser("history", help="one conversation, oldest first")
    history.add_argument("peer", help="login, peer id or contact name")
    history.add_argument("--limit", type=int, default=100)
    _common(history)
    history.set_defaults(func=cmd_history)

    call = subparsers.add_parser(
        "call",
        help="call a peer (tone, WAV or silence), hang up after --duration",
        description="Place a call through the running node, wait for the answer, keep "
        "it --duration seconds, hang up. Media flows in the node.",
    )
    call.add_argument("to", help="login, peer id or contact name")
    _media_arguments(call)
    call.add_argument("--duration", type=float, default=5.0, help="seconds once answered")
    call.add_argument("--video", action="store_true", help="also send a test pattern")
    _common(call)
    call.set_defaults(func=cmd_call)
    answer = subparsers.add_parser("answer", help="answer the ringing call")
    _media_arguments(answer)
    _common(answer)
    answer.set_defaults(func=cmd_answer)
    hangup = subparsers.add_parser("hangup", help="hang up the current call")
    _common(hangup)
    hangup.set_defaults(func=cmd_hangup)
    chat_cli.register(subparsers)  # `chat`: its own module (an interactive view)

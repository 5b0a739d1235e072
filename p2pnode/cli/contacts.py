"""`p2pnode contacts requests|accept|decline|unblock`: strangers who wrote or called.

A stranger's messages and calls wait in the running node's requests folder
(``app/peer_contacts.py``) until the person accepts (a contact: its conversation
is shown, its calls ring) or declines (blocked: its messages and calls are
dropped, its mailbox copies never receipted). These sub-commands of ``contacts``
(added by ``cli/peer.py``) drive the node's control API, as the app's Contacts
view does.

Exit statuses as everywhere: an id with no pending request, or not blocked, is a
negative answer (1), checked against the node's list first because the control
client reads every 404 as a usage error; a malformed id is a usage error (2).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pydantic

from p2pnode.app.api_contacts import AcceptRequest, RequestModel, RequestsAnswer
from p2pnode.app.api_peer import ContactModel, ContactsAnswer
from p2pnode.cli.common import (
    EXIT_OK,
    CliError,
    NegativeAnswerError,
    NetworkFailureError,
    add_home_argument,
)
from p2pnode.cli.control_client import RunningNode, running_node
from p2pnode.identity import default_home, public_key_from_peer_id

__all__ = ["add_request_commands", "default_name", "describe_request"]

REQUESTS = "/api/contacts/requests"


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


def _peer_id(text: str) -> str:
    try:
        public_key_from_peer_id(text)
    except ValueError:
        raise CliError("not a peer id (52 characters, as `contacts requests` lists)") from None
    return text


def default_name(peer_id: str) -> str:
    """A contact name when ``--name`` is not given: ``peer-`` and the id's first 8."""
    return "peer-" + peer_id[:8].lower()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def describe_request(request: RequestModel) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(request.last_at))
    counts = f"{_plural(request.messages, 'message')}, {_plural(request.calls, 'call')}"
    preview = f': "{request.preview}"' if request.preview else ""
    return f"{request.peer_id}  {counts}, last {when}{preview}"


def _requests(node: RunningNode) -> RequestsAnswer:
    return node.request("GET", REQUESTS, RequestsAnswer)


def cmd_requests(args: argparse.Namespace) -> int:
    answer = _requests(_node(args))
    lines = [describe_request(r) for r in answer.requests] or ["no contact requests"]
    lines += [f"blocked: {peer_id}" for peer_id in answer.blocked]
    return _print(args, answer, lines)


def cmd_accept(args: argparse.Namespace) -> int:
    peer_id = _peer_id(args.peer_id)
    node = _node(args)
    if not any(r.peer_id == peer_id for r in _requests(node).requests):
        raise NegativeAnswerError("no pending request from that peer")
    body = AcceptRequest(name=args.name or default_name(peer_id))
    answer = node.request("POST", f"{REQUESTS}/{peer_id}/accept", ContactModel, body=body)
    return _print(args, answer, [f"accepted {peer_id} as {answer.name}"])


def cmd_decline(args: argparse.Namespace) -> int:
    peer_id = _peer_id(args.peer_id)
    node = _node(args)
    contacts = node.request("GET", "/api/contacts", ContactsAnswer).contacts
    named = [c.name for c in contacts if c.peer_id == peer_id]
    if named:
        raise NegativeAnswerError(f"a contact ({named[0]}): remove the contact first")
    answer = node.request("POST", f"{REQUESTS}/{peer_id}/decline", RequestsAnswer)
    return _print(args, answer, [f"declined {peer_id}: blocked (its messages and calls dropped)"])


def cmd_unblock(args: argparse.Namespace) -> int:
    peer_id = _peer_id(args.peer_id)
    node = _node(args)
    if peer_id not in _requests(node).blocked:
        raise NegativeAnswerError("that peer is not blocked")
    answer = node.request("POST", f"/api/contacts/blocked/{peer_id}/unblock", RequestsAnswer)
    return _print(args, answer, [f"unblocked {peer_id}: its next message or call is a request"])


def _common(parser: argparse.ArgumentParser) -> None:
    add_home_argument(parser)
    parser.add_argument("--json", action="store_true", help="the API's JSON answer")


def add_request_commands(inner: argparse._SubParsersAction[Any]) -> None:
    """Add ``requests``, ``accept``, ``decline``, ``unblock`` to ``contacts``."""
    listing = inner.add_parser("requests", help="strangers who wrote or called; blocked peers")
    _common(listing)
    listing.set_defaults(func=cmd_requests)
    accept = inner.add_parser("accept", help="make a stranger a contact (its messages shown)")
    accept.add_argument("peer_id", metavar="ID", help="the peer id `contacts requests` lists")
    accept.add_argument("--name", help="its contact name: a-z 0-9 . _ - (default peer-ID8)")
    _common(accept)
    accept.set_defaults(func=cmd_accept)
    decline = inner.add_parser("decline", help="block a stranger (messages and calls dropped)")
    decline.add_argument("peer_id", metavar="ID")
    _common(decline)
    decline.set_defaults(func=cmd_decline)
    unblock = inner.add_parser("unblock", help="lift a block: its next message is a request")
    unblock.add_argument("peer_id", metavar="ID")
    _common(unblock)
    unblock.set_defaults(func=cmd_unblock)

"""`p2pnode mailboxes [--check]`: which supernodes hold our offline mail, in the running node.

The running node's chat service keeps the list (``GET /api/mailboxes``): the
mailboxes named in our signed list (``pinned``: from ``[chat] mailboxes``, else
chosen by the node), since when, and whether the node's last TCP check reached
each; then the former ones still drained until their retention ends. ``--check``
asks the node to check them now (``POST /api/mailboxes/check``): the answer is
the list as it was before the check (the check itself takes up to a few seconds
per mailbox), so the command says so and the next ``p2pnode mailboxes`` shows its
outcome. No mailbox at all is a negative answer (exit 1): messages then reach
this node only while it is online.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from p2pnode.app.api_contacts import MailboxesAnswer, MailboxModel
from p2pnode.cli.common import EXIT_NEGATIVE, EXIT_OK, NetworkFailureError, add_home_argument
from p2pnode.cli.control_client import RunningNode, running_node
from p2pnode.identity import default_home

__all__ = ["describe_mailboxes", "register"]


def _node(args: argparse.Namespace) -> RunningNode:
    home = args.home if args.home is not None else default_home()
    node = running_node(home)
    if node is None:
        raise NetworkFailureError(
            f"no node is running in {home} (start one with [chat] enabled: p2pnode run)"
        )
    return node


def _when(unix: float | None) -> str:
    if unix is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def _state(mailbox: MailboxModel) -> str:
    if mailbox.reachable is None:
        return "not checked yet"
    word = "reachable" if mailbox.reachable else "UNREACHABLE"
    return f"{word} ({_when(mailbox.checked_at)})"


def describe_mailboxes(answer: MailboxesAnswer) -> list[str]:
    """The human table: one line per mailbox, then the former ones."""
    if not answer.mailboxes:
        lines = ["no mailboxes: messages reach this node only while it is online"]
    else:
        lines = [f"{'SUPERNODE':<20} {'ADDRESS':<22} {'CHOSEN BY':<9} {'SINCE':<19} STATE"]
        for m in answer.mailboxes:
            chosen = "config" if m.pinned else "node"
            lines.append(
                f"{m.peer_id[:20]:<20} {m.address:<22} {chosen:<9} {_when(m.since):<19} {_state(m)}"
            )
    for former in answer.former:
        until = "no end known" if former.drained_until is None else _when(former.drained_until)
        lines.append(f"former {former.peer_id[:20]} {former.address}: drained until {until}")
    return lines


def cmd_mailboxes(args: argparse.Namespace) -> int:
    node = _node(args)
    if args.check:
        answer = node.request("POST", "/api/mailboxes/check", MailboxesAnswer)
    else:
        answer = node.request("GET", "/api/mailboxes", MailboxesAnswer)
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        lines = describe_mailboxes(answer)
        if args.check:
            lines.append("checking now: the list above is from before the check")
        print("\n".join(lines))
    return EXIT_OK if answer.mailboxes else EXIT_NEGATIVE


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `mailboxes`."""
    parser = subparsers.add_parser(
        "mailboxes",
        help="the supernodes holding our offline mail, and whether they answer",
        description="List the running node's mailboxes (GET /api/mailboxes): supernode, "
        "address, chosen by the config or the node, since when, the node's last check; then "
        "the former ones still drained. Exit status 1 when there is none.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="have the node check them now (the list shown is from before the check)",
    )
    add_home_argument(parser)
    parser.add_argument("--json", action="store_true", help="the API's JSON answer")
    parser.set_defaults(func=cmd_mailboxes)

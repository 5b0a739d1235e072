"""`p2pnode chat TO`: a plain terminal view of one conversation through the running node.

Kept simple on purpose (no curses): the scrollback is printed first, then every
line typed is sent, and a background poller prints what arrives, our messages'
receipts as they change, and the peer's presence when it changes. ``/quit`` or
end of input leaves. Polling (``POLL`` seconds) instead of the WebSocket keeps
it to the standard library, like the rest of the CLI's control client.
"""

from __future__ import annotations

import argparse
import threading
import urllib.parse
from typing import Any

from p2pnode.app.api_peer import (
    ContactsAnswer,
    MessagesAnswer,
    MessageStatusAnswer,
    ReadAnswer,
    ReadRequest,
    SendAnswer,
    SendRequest,
)
from p2pnode.cli.common import EXIT_OK, CliError, NetworkFailureError, add_home_argument
from p2pnode.cli.control_client import RunningNode, running_node
from p2pnode.identity import default_home

__all__ = ["ChatView", "register"]

POLL = 1.0  # seconds between two looks at the conversation
SCROLLBACK = 20  # messages shown when the view opens
WINDOW = 100  # messages looked at on each poll (newest)
QUIT = "/quit"


class ChatView:
    """What the view has printed: message ids, receipts, the peer's presence."""

    def __init__(self, node: RunningNode, peer: str) -> None:
        self.node = node
        self.peer = peer
        self.peer_id = ""
        self.seen: set[str] = set()
        self.receipts: dict[str, str] = {}  # our message id -> "sent"/"delivered"/"read"
        self.presence = ""
        self.lock = threading.Lock()

    def _history(self, limit: int) -> MessagesAnswer:
        path = f"/api/history/{urllib.parse.quote(self.peer, safe='')}"
        return self.node.request("GET", path, MessagesAnswer, query=[("limit", str(limit))])

    def open(self) -> list[str]:
        lines = []
        messages = self._history(WINDOW).messages
        for message in messages:
            self.seen.add(message.message_id)
            self.peer_id = message.peer_id
        for message in messages[-SCROLLBACK:]:
            lines.append(self._line(message.incoming, message.text, message.message_id))
        self._read([m.message_id for m in messages[-SCROLLBACK:] if m.incoming])
        return lines

    def _read(self, message_ids: list[str]) -> None:
        """Shown on screen: the sender gets our read receipts."""
        if message_ids and self.peer_id:
            body = ReadRequest(peer=self.peer_id, message_ids=message_ids)
            self.node.request("POST", "/api/read", ReadAnswer, body=body)

    def _line(self, incoming: bool, text: str, message_id: str) -> str:
        if incoming:
            return f"  {self.peer}: {text}"
        return f"  me: {text}  [{self.receipts.get(message_id, 'sent')}]"

    def send(self, text: str) -> str:
        sent = self.node.request(
            "POST", "/api/messages", SendAnswer, body=SendRequest(to=self.peer, text=text)
        )
        with self.lock:
            self.peer_id = sent.peer_id
            self.seen.add(sent.message_id)
            self.receipts[sent.message_id] = "sent"
        return sent.message_id

    def poll(self) -> list[str]:
        """Lines to print: new incoming messages, receipt changes, presence changes."""
        lines = []
        shown = []
        for message in self._history(WINDOW).messages:
            with self.lock:
                new = message.message_id not in self.seen
                self.seen.add(message.message_id)
                self.peer_id = message.peer_id
            if new and message.incoming:
                lines.append(self._line(True, message.text, message.message_id))
                shown.append(message.message_id)
        self._read(shown)
        for message_id, was in list(self.receipts.items()):
            if was == "read":
                continue
            status = self.node.request("GET", f"/api/messages/{message_id}", MessageStatusAnswer)
            now = "read" if status.read else "delivered" if status.delivered else was
            if status.state == "held":
                now = f"held in {status.copies} mailboxes"
            if now != was:
                self.receipts[message_id] = now
                lines.append(f"  (message {message_id[:8]}: {now})")
        presence = self._presence()
        if presence and presence != self.presence:
            self.presence = presence
            lines.append(f"  ({self.peer} is {presence})")
        return lines

    def _presence(self) -> str:
        for contact in self.node.request("GET", "/api/contacts", ContactsAnswer).contacts:
            if self.peer in (contact.name, contact.peer_id) or contact.peer_id == self.peer_id:
                if contact.online is None:
                    return ""
                return contact.status if contact.online else "offline"
        return ""


def cmd_chat(args: argparse.Namespace) -> int:
    home = args.home if args.home is not None else default_home()
    node = running_node(home)
    if node is None:
        raise NetworkFailureError(f"no node is running in {home} (start one: p2pnode run)")
    view = ChatView(node, args.peer)
    print(f"chat with {args.peer} ({QUIT} or end of input leaves)", flush=True)
    for line in view.open():
        print(line, flush=True)
    stop = threading.Event()

    def poller() -> None:
        while not stop.wait(POLL):
            try:
                lines = view.poll()
            except (CliError, NetworkFailureError) as error:
                lines = [f"  (node: {error})"]
            for line in lines:
                print(line, flush=True)

    thread = threading.Thread(target=poller, name="chat-poller", daemon=True)
    thread.start()
    try:
        while True:
            try:
                text = input()
            except EOFError:
                break
            if text.strip() == QUIT:
                break
            if text.strip():
                view.send(text)
                print(f"  me: {text}", flush=True)
        stop.wait(args.linger)  # end of piped input: let receipts arrive
    finally:
        stop.set()
        thread.join(timeout=5)
    for line in view.poll():
        print(line, flush=True)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `chat`."""
    chat = subparsers.add_parser(
        "chat",
        help="an interactive view of one conversation",
        description="Scrollback, then each line you type is sent; arrivals, receipts and "
        "presence changes are printed as they happen.",
    )
    chat.add_argument("peer", help="login, peer id or contact name")
    chat.add_argument(
        "--linger", type=float, default=0.0, help="seconds to keep watching after input ends"
    )
    add_home_argument(chat)
    chat.set_defaults(func=cmd_chat)

"""SIP MESSAGE (RFC 3428) between accounts: delivered to every device, queued when none.

Why a queue: a desk phone or softphone is often offline; a page-mode message
to it would otherwise be lost. The gateway answers 202 Accepted (RFC 3428
§7: "accepted for delivery", not delivered) and sends the message to the
account's devices when one registers. Bounded: ``MAX_PER_ACCOUNT`` messages
per login and ``MAX_TOTAL`` overall (beyond: 486 for that login / 503), each at
most ``MAX_BODY`` bytes (413) and kept ``MAX_AGE`` seconds.

Sans-IO: the gateway adapter owns the transactions; this module builds the
outgoing MESSAGE requests and holds the queue.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from p2pnode.gateways.sip.b2bua import Contact
from p2pnode.gateways.sip.headers import NameAddress
from p2pnode.gateways.sip.message import Header, SipRequest
from p2pnode.gateways.sip.transaction import MAGIC_COOKIE

__all__ = [
    "MAX_AGE",
    "MAX_BODY",
    "MAX_PER_ACCOUNT",
    "MAX_TOTAL",
    "MessageQueue",
    "QueuedMessage",
    "message_request",
]

MAX_PER_ACCOUNT = 50
MAX_TOTAL = 10_000
MAX_BODY = 4096
MAX_AGE = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    sender: NameAddress  # From without tag
    recipient: str  # the To value (the account's AOR)
    content_type: str
    body: bytes
    queued_at: float


def message_request(
    message: QueuedMessage, contact: Contact, *, via: str, branch_id: str, tag: str, call_id: str
) -> SipRequest:
    """A fresh MESSAGE to one device (page mode: a new Call-ID each time)."""
    headers = (
        Header("Via", f"{via};branch={MAGIC_COOKIE}{branch_id}"),
        Header("Max-Forwards", "70"),
        Header("From", f"{message.sender};tag={tag}"),
        Header("To", message.recipient),
        Header("Call-ID", call_id),
        Header("CSeq", "1 MESSAGE"),
        Header("Content-Type", message.content_type),
        Header("Content-Length", str(len(message.body))),
    )
    return SipRequest.build("MESSAGE", contact.uri, headers, message.body)


class MessageQueue:
    """Messages waiting for a login's device to register."""

    def __init__(self, *, per_account: int = MAX_PER_ACCOUNT, total: int = MAX_TOTAL) -> None:
        self.per_account = per_account
        self.total = total
        self._queues: dict[str, deque[QueuedMessage]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def put(self, login: str, message: QueuedMessage) -> int | None:
        """Queue ``message``; None when queued, else the status to refuse with."""
        if len(message.body) > MAX_BODY:
            return 413
        if self._count >= self.total:
            return 503
        queue = self._queues.setdefault(login, deque())
        if len(queue) >= self.per_account:
            return 486
        queue.append(message)
        self._count += 1
        return None

    def take(self, login: str, now: float) -> list[QueuedMessage]:
        """Everything queued for ``login`` that is not too old (the queue empties)."""
        queue = self._queues.pop(login, deque())
        self._count -= len(queue)
        return [m for m in queue if now - m.queued_at <= MAX_AGE]

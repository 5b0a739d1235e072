"""MESSAGE (RFC 3428) toward a login's registered devices, or held until one registers.

Split out of :mod:`gateway` (which decides who may send to whom): a MESSAGE is
forked to every registered device of the login; the first 2xx answers the
sender 200; if every device refused it for good the sender gets that refusal;
otherwise (some device said "not now" or nobody is registered) it waits in the
bounded :class:`messages.MessageQueue` (202) and goes out when the login next
registers (``flush``). The queue's own refusals (full, too large) answer the
sender with their status.

Not held (``hold=False``): MESSAGEs to or from the SIP <-> P2P bridge. The
bridge keeps its texts itself, on disk (the chat outbox one way, its held
texts the other), so a "not now" must reach the sender instead of waiting in
this in-memory queue (which a restart empties, and whose redelivery nobody
answers). Nobody registered answers 480; otherwise the best final answer of
the devices goes back (RFC 3261 §16.7 step 6: a 6xx, else the lowest class),
with the device's reason phrase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pnode.gateways.sip.actions import Contact
from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.messages import MessageQueue, QueuedMessage, message_request
from p2pnode.gateways.sip.transaction import ClientKey, ServerKey
from p2pnode.gateways.sip.transport import SipStack

__all__ = ["MessageDelivery"]

Respond = Callable[[ServerKey, SipRequest, int, str], None]

# A device's final answer meaning "not now" (no answer counts as 408): the MESSAGE is held.
_TRY_LATER = frozenset({408, 480, 503})


@dataclass(slots=True)
class _Waiting:
    """A MESSAGE forwarded to a login's devices: the first 2xx answers it; if every device
    refused it for good (403, 415, ...) the sender gets that refusal, else it queues."""

    key: ServerKey
    request: SipRequest
    login: str
    message: QueuedMessage
    remaining: int
    answered: bool = False
    try_later: bool = False  # some device said "not now": hold the message for it
    refusal: int | None = None  # a device's final refusal
    hold: bool = True  # False: no queue, the best device answer goes back (bridge texts)
    best: tuple[int, str] | None = None  # with hold=False: the best refusal so far


class MessageDelivery:
    """Every MESSAGE in flight toward devices, and the hand-off to the queue."""

    def __init__(
        self,
        *,
        stack: SipStack,
        queue: MessageQueue,
        randbytes: Callable[[int], bytes],
        respond: Respond,
    ) -> None:
        self.queue = queue
        self._stack = stack
        self._randbytes = randbytes
        self._respond = respond
        self._waiting: dict[ClientKey, _Waiting] = {}
        self.address: tuple[str, int] | None = None  # the gateway's own, for Via

    def owns(self, key: ClientKey) -> bool:
        """Whether this client transaction carries one of our MESSAGEs."""
        return key in self._waiting

    def deliver(
        self,
        key: ServerKey,
        request: SipRequest,
        login: str,
        message: QueuedMessage,
        contacts: list[Contact],
        *,
        hold: bool = True,
    ) -> None:
        """Fork ``message`` to ``contacts``; with none, queue it (202) or refuse it
        (``hold=False``: 480, never queued)."""
        if not contacts and not hold:
            self._respond(key, request, 480, "Temporarily Unavailable")
            return
        if not contacts:
            refusal = self.queue.put(login, message)
            if refusal is not None:
                self._respond(key, request, refusal, "Message Refused")
            else:
                self._respond(key, request, 202, "Accepted")
            return
        waiting = _Waiting(key, request, login, message, len(contacts), hold=hold)
        for contact in contacts:
            self.send(message, contact, waiting)

    def flush(self, login: str, contacts: list[Contact], now: float) -> None:
        """A device of ``login`` registered: what waited for it goes out (no answer back)."""
        for message in self.queue.take(login, now):
            for contact in contacts:
                self.send(message, contact)

    def send(
        self, message: QueuedMessage, contact: Contact, waiting: _Waiting | None = None
    ) -> None:
        assert self.address is not None
        via = self._stack.transport.sent_by(contact.destination, contact.reliable) + ";rport"
        token = self._randbytes(8).hex()
        outgoing = message_request(
            message, contact, via=via, branch_id=token, tag=token[:8], call_id=token + "@gw"
        )
        client = self._stack.send_request(outgoing, contact.destination, reliable=contact.reliable)
        if waiting is not None:
            self._waiting[client] = waiting

    def result(self, key: ClientKey, status: int, reason: str = "") -> None:
        """A device's final answer to a forwarded MESSAGE (408: no answer at all)."""
        waiting = self._waiting.pop(key, None)
        if waiting is None or waiting.answered:
            return
        waiting.remaining -= 1
        if 200 <= status < 300:
            waiting.answered = True
            if waiting.hold:
                self._respond(waiting.key, waiting.request, 200, "OK")
            else:  # the bridge's own 2xx: 202 means "in the chat outbox", not "delivered"
                self._respond(waiting.key, waiting.request, status, reason or "OK")
            return
        if not waiting.hold:
            if waiting.best is None or _rank(status) < _rank(waiting.best[0]):
                waiting.best = (status, reason or "Refused by the device")
            if waiting.remaining == 0:
                waiting.answered = True
                self._respond(waiting.key, waiting.request, *waiting.best)
            return
        if status in _TRY_LATER:
            waiting.try_later = True
        else:
            waiting.refusal = status
        if waiting.remaining == 0 and not waiting.try_later and waiting.refusal is not None:
            waiting.answered = True  # every device refused it: holding it would only hide that
            self._respond(waiting.key, waiting.request, waiting.refusal, "Refused by the device")
        elif waiting.remaining == 0:
            waiting.answered = True
            refusal = self.queue.put(waiting.login, waiting.message)
            status, reason = (202, "Accepted") if refusal is None else (refusal, "Message Refused")
            self._respond(waiting.key, waiting.request, status, reason)


def _rank(status: int) -> tuple[int, int]:
    """RFC 3261 §16.7 step 6: any 6xx first, else the lowest response class."""
    return (0 if status >= 600 else 1, status // 100)

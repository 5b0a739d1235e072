"""Outstanding client requests keyed by the caller's own labels: send, retransmit, match, time out.

A sans-IO building block for the NAT discovery and reachability machines: the
owner calls ``start``, ``match`` (with a decoded message), ``handle_timeout``
and drains ``take_transmits``. Responses are matched by transaction id *and*
the local socket the request left from; the transaction id is 96 random bits
(RFC 8489 §6: "uniformly and randomly chosen"), drawn from an injected source.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from nat.stun.attributes import Address, Attribute
from nat.stun.message import StunClass, StunMessage, StunMethod, encode_message
from nat.stun.server import Transmit
from nat.stun.transaction import ClientTransaction, RetransmitPolicy, TransactionState

__all__ = ["MAX_OUTSTANDING", "Outstanding", "TransactionTable"]

MAX_OUTSTANDING = 64

K = TypeVar("K", bound=Hashable)


@dataclass
class Outstanding(Generic[K]):
    key: K
    local: Address
    remote: Address
    data: bytes
    transaction: ClientTransaction


class TransactionTable(Generic[K]):
    """Requests in flight; each label (``K``) has at most one."""

    def __init__(self, policy: RetransmitPolicy, random_bytes: Callable[[int], bytes]) -> None:
        self._policy = policy
        self._random_bytes = random_bytes
        self._by_tid: dict[bytes, Outstanding[K]] = {}
        self._transmits: list[Transmit] = []

    def start(
        self,
        key: K,
        local: Address,
        remote: Address,
        attributes: tuple[Attribute, ...],
        now: float,
    ) -> bytes:
        """Send a Binding request now; returns its transaction id."""
        if len(self._by_tid) >= MAX_OUTSTANDING:
            raise RuntimeError("too many outstanding STUN requests")
        tid = self._random_bytes(12)
        message = StunMessage(StunMethod.BINDING, StunClass.REQUEST, tid, attributes)
        data = encode_message(message, fingerprint=True)
        entry = Outstanding(key, local, remote, data, ClientTransaction(self._policy, now))
        self._by_tid[tid] = entry
        self._transmits.append(Transmit(data, local, remote))
        return tid

    def match(self, message: StunMessage, local: Address) -> Outstanding[K] | None:
        """The outstanding request this response answers (and retire it), if any."""
        if message.cls not in (StunClass.SUCCESS, StunClass.ERROR):
            return None
        entry = self._by_tid.get(message.transaction_id)
        if entry is None or entry.local != local:
            return None
        entry.transaction.on_response()
        del self._by_tid[message.transaction_id]
        return entry

    def cancel(self, tid: bytes) -> None:
        """Stop retransmitting a request whose answer arrived some other way."""
        self._by_tid.pop(tid, None)

    def handle_timeout(self, now: float) -> list[Outstanding[K]]:
        """Retransmit what is due; returns (and retires) the requests that failed."""
        failed: list[Outstanding[K]] = []
        for tid, entry in list(self._by_tid.items()):
            if entry.transaction.on_timer(now):
                self._transmits.append(Transmit(entry.data, entry.local, entry.remote))
            if entry.transaction.state is TransactionState.TIMED_OUT:
                failed.append(entry)
                del self._by_tid[tid]
        return failed

    def next_deadline(self) -> float | None:
        deadlines = [e.transaction.next_deadline() for e in self._by_tid.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def take_transmits(self) -> list[Transmit]:
        out, self._transmits = self._transmits, []
        return out

    def __len__(self) -> int:
        return len(self._by_tid)

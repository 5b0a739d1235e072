"""The requests a core has in flight: ids, deadlines, the adaptive timeout.

Why a module of its own: the core's dispatch should read as "match a reply to a
request, answer a request"; the bookkeeping of what is outstanding, when it
times out and how long the network takes (RFC 6298) is one concept, kept here.

Invariants:
- At most ``max_pending`` requests are outstanding; ``add`` refuses beyond that.
- A request id is random (from the core's random source) and unique among the
  outstanding ones: it is the nonce a reply must echo.
- A request leaves exactly once: by ``complete`` (a matching reply) or by
  ``expired`` (its deadline passed). Deadlines superseded by completion are
  skipped lazily, so both are O(log n).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from p2pnode.dht.keys import Address
from p2pnode.dht.messages import REQUEST_ID_BYTES, Frame, Message

if TYPE_CHECKING:
    from p2pnode.dht.keys import Contact

__all__ = ["PendingRequests", "Requester", "SentRequest"]


@dataclass(slots=True)
class SentRequest:
    request_id: bytes
    address: Address
    message: Message
    expected_key: bytes | None
    sent_at: float
    deadline: float
    owner: Requester | None
    retried: bool = False  # a STORE sent again with a proof after an UNPROVEN answer


class Requester(Protocol):
    def on_reply(self, request: SentRequest, frame: Frame, sender: Contact, now: float) -> None:
        """A reply matching ``request`` (right address, right key, right type) arrived."""

    def on_timeout(self, request: SentRequest, now: float) -> None:
        """No valid reply before the deadline (or the request could not be sent)."""


class PendingRequests:
    """Outstanding requests by id, their deadlines, and the RTT estimate."""

    def __init__(
        self, rng: random.Random, *, max_pending: int, rto_min: float, rto_max: float
    ) -> None:
        self._rng = rng
        self.max_pending = max_pending
        self.rto_min = rto_min
        self.rto_max = rto_max
        self._pending: dict[bytes, SentRequest] = {}
        self._deadlines: list[tuple[float, bytes]] = []
        self.srtt = 0.0
        self.rttvar = 0.0
        self.sent = 0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_pending

    def new_id(self) -> bytes:
        request_id = self._rng.randbytes(REQUEST_ID_BYTES)
        while request_id in self._pending:
            request_id = self._rng.randbytes(REQUEST_ID_BYTES)
        return request_id

    def add(
        self,
        request_id: bytes,
        address: Address,
        message: Message,
        expected_key: bytes | None,
        owner: Requester | None,
        now: float,
        *,
        retried: bool = False,
    ) -> SentRequest:
        deadline = now + self.rto()
        request = SentRequest(
            request_id, address, message, expected_key, now, deadline, owner, retried
        )
        self._pending[request_id] = request
        heapq.heappush(self._deadlines, (deadline, request_id))
        self.sent += 1
        return request

    def get(self, request_id: bytes) -> SentRequest | None:
        return self._pending.get(request_id)

    def complete(self, request_id: bytes, now: float) -> None:
        """A valid reply arrived: forget the request and learn its round-trip time."""
        request = self._pending.pop(request_id)
        self._rtt_sample(now - request.sent_at)

    def expired(self, now: float) -> list[SentRequest]:
        """Requests whose deadline is at or before ``now``, removed, oldest first."""
        due: list[SentRequest] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, request_id = heapq.heappop(deadlines)
            request = self._pending.get(request_id)
            if request is None or request.deadline != deadline:
                continue
            del self._pending[request_id]
            self.timeouts += 1
            due.append(request)
        return due

    def next_deadline(self) -> float | None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][1] not in self._pending:
            heapq.heappop(deadlines)  # completed: drop lazily
        return deadlines[0][0] if deadlines else None

    def rto(self) -> float:
        """RFC 6298 section 2: RTO = SRTT + 4 RTTVAR, clamped to the configured range."""
        if not self.srtt:
            return self.rto_max
        rto = self.srtt + 4 * self.rttvar
        return min(self.rto_max, max(self.rto_min, rto))

    def _rtt_sample(self, rtt: float) -> None:
        if not self.srtt:  # RFC 6298 (2.2): first measurement
            self.srtt, self.rttvar = rtt, rtt / 2
        else:  # RFC 6298 (2.3), alpha = 1/8, beta = 1/4
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

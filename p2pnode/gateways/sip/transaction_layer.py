"""The transaction layer: every client and server transaction of one SIP endpoint.

It matches incoming messages to transactions (RFC 3261 §17.1.3, §17.2.3),
creates server transactions for new requests (bounded by ``max_transactions``:
beyond it new requests are refused statelessly with 503), fires timers in the
caller's clock, and turns everything into :class:`Transmit` effects and typed
events for the layer above (a dialog/UA core, a registrar, a B2BUA).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from p2pnode.gateways.sip.message import SipMessage, SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.transaction import (
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
    MAGIC_COOKIE,
    SERVER_INVITE,
    SERVER_NON_INVITE,
    Address,
    ClientKey,
    Effect,
    RequestReceived,
    ServerKey,
    StrayAck,
    StrayResponse,
    Timers,
    Transaction,
    TransactionStateError,
    Transmit,
    TxInput,
    TxState,
    client_key,
    response_input,
    server_key,
)

__all__ = ["LayerStatistics", "TransactionLayer", "response_destination"]

_HeapEntry = tuple[float, int, Transaction, TxInput]


def response_destination(request: SipRequest, source: Address, *, reliable: bool) -> Address:
    """Where responses to ``request`` go (RFC 3261 §18.2.2 with RFC 3581 §4 rport).

    Streams answer on the connection the request came in on (the adapter maps
    the address back to it); datagrams go to the source address when the
    client asked for rport, else to the source IP and the Via's port.
    """
    via = request.top_via
    if reliable or via.has_rport:
        return source
    return source[0], via.sent_by[1]


@dataclass(frozen=True, slots=True)
class LayerStatistics:
    clients: int
    servers: int
    refused_overload: int
    stray_responses: int


class TransactionLayer:
    """Every client and server transaction of one SIP endpoint, bounded, sans-IO."""

    def __init__(
        self,
        *,
        timers: Timers | None = None,
        max_transactions: int = 4096,
        auto_trying: bool = True,
    ) -> None:
        self.timers = timers or Timers()
        self.max_transactions = max_transactions
        self.auto_trying = auto_trying
        self._clients: dict[ClientKey, Transaction] = {}
        self._servers: dict[ServerKey, Transaction] = {}
        self._refused = 0
        self._stray = 0
        # Timers as a heap with lazy deletion: O(log n) per arm and per firing.
        self._heap: list[_HeapEntry] = []
        self._order = itertools.count()

    def statistics(self) -> LayerStatistics:
        return LayerStatistics(len(self._clients), len(self._servers), self._refused, self._stray)

    def state(self, key: ClientKey | ServerKey) -> TxState:
        """The state of a live transaction (TERMINATED once it is gone)."""
        tx = self._clients.get(key) if isinstance(key, ClientKey) else self._servers.get(key)
        return TxState.TERMINATED if tx is None else tx.state

    # -- client side ------------------------------------------------------------------
    def send_request(
        self, request: SipRequest, destination: Address, now: float, *, reliable: bool
    ) -> tuple[ClientKey, list[Effect]]:
        """Start a client transaction; the request's top Via must carry a fresh branch."""
        key = client_key(request)
        if request.method == "ACK" or key is None or not key.branch.startswith(MAGIC_COOKIE):
            raise ValueError("a client transaction needs a non-ACK request with an RFC 3261 branch")
        if key in self._clients:
            raise ValueError("branch already in use")
        if len(self._clients) + len(self._servers) >= self.max_transactions:
            raise OverflowError("too many transactions")
        invite = request.method == "INVITE"
        tx = Transaction(
            key=key,
            request=request,
            peer=destination,
            reliable=reliable,
            timers=self.timers,
            state=TxState.CALLING if invite else TxState.TRYING,
            table=CLIENT_INVITE if invite else CLIENT_NON_INVITE,
            on_arm=self._schedule,
        )
        if not reliable:
            tx.arm(TxInput.TIMER_A if invite else TxInput.TIMER_E, now, self.timers.t1)
        tx.arm(TxInput.TIMER_B if invite else TxInput.TIMER_F, now, 64 * self.timers.t1)
        self._clients[key] = tx
        return key, [tx.transmit(request)]

    # -- server side --------------------------------------------------------------------
    def respond(self, key: ServerKey, response: SipResponse, now: float) -> list[Effect]:
        """The TU's response to the request of server transaction ``key``."""
        tx = self._servers.get(key)
        if tx is None:
            raise TransactionStateError("no such server transaction")
        effects = tx.handle(response_input(response.status, tu=True), now, response)
        self._forget_if_done(tx)
        return effects

    def receive(
        self, message: SipMessage, source: Address, now: float, *, reliable: bool
    ) -> list[Effect]:
        """A message from the network (already parsed; RFC 3581 stamping is the adapter's)."""
        if isinstance(message, SipResponse):
            ckey = client_key(message)
            client = None if ckey is None else self._clients.get(ckey)
            if client is None:
                self._stray += 1
                return [StrayResponse(message, source)]
            effects = client.handle(response_input(message.status, tu=False), now, message)
            self._forget_if_done(client)
            return effects
        skey = server_key(message)
        server = self._servers.get(skey)
        if message.method == "ACK":
            if server is None or server.request.method != "INVITE":
                return [StrayAck(message, source)]
            effects = server.handle(TxInput.ACK, now, message)
            self._forget_if_done(server)
            return effects
        if server is not None:
            return server.handle(TxInput.REQUEST, now, message)
        destination = response_destination(message, source, reliable=reliable)
        if len(self._clients) + len(self._servers) >= self.max_transactions:
            # Bounded state: refuse statelessly, the client retries later (RFC 3261 §21.5.4).
            self._refused += 1
            refusal = build_response(message, 503, "Service Unavailable", ("Retry-After", "5"))
            return [Transmit(refusal, destination, reliable)]
        invite = message.method == "INVITE"
        server = Transaction(
            key=skey,
            request=message,
            peer=destination,
            reliable=reliable,
            timers=self.timers,
            state=TxState.PROCEEDING if invite else TxState.TRYING,
            table=SERVER_INVITE if invite else SERVER_NON_INVITE,
            on_arm=self._schedule,
        )
        self._servers[skey] = server
        created: list[Effect] = [RequestReceived(skey, message, source, reliable)]
        if invite and self.auto_trying:
            # §17.2.1: a 100 Trying at once, so the client's Timer A stops.
            trying = build_response(message, 100, "Trying")
            created += server.handle(TxInput.TU_PROVISIONAL, now, trying)
        return created

    # -- time ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)  # a disarmed, re-armed or finished transaction's timer
        return heap[0][0] if heap else None

    def advance(self, now: float) -> list[Effect]:
        """Fire every timer due at or before ``now``, each at its own deadline."""
        effects: list[Effect] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            deadline, _, tx, timer = entry
            del tx.deadlines[timer]
            effects += tx.handle(timer, deadline)
            self._forget_if_done(tx)
        return effects

    def _live(self, entry: _HeapEntry) -> bool:
        deadline, _, tx, timer = entry
        return tx.deadlines.get(timer) == deadline and tx.state is not TxState.TERMINATED

    def _schedule(self, deadline: float, tx: Transaction, timer: TxInput) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), tx, timer))

    def _forget_if_done(self, tx: Transaction) -> None:
        if tx.state is not TxState.TERMINATED:
            return
        if isinstance(tx.key, ClientKey):
            if self._clients.get(tx.key) is tx:
                del self._clients[tx.key]
        elif self._servers.get(tx.key) is tx:
            del self._servers[tx.key]

"""The transaction layer: every client and server transaction of one SIP endpoint.

It matches incoming messages to transactions (RFC 3261 §17.1.3, §17.2.3),
creates server transactions for new requests (bounded by ``max_transactions``:
beyond it new requests are refused statelessly with 503), fires timers in the
caller's clock, and turns everything into :class:`Transmit` effects and typed
events for the layer above (a dialog/UA core, a registrar, a B2BUA).
"""

from __future__ import annotations

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
        self._reap()
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
            self._reap()
            return effects
        skey = server_key(message)
        server = self._servers.get(skey)
        if message.method == "ACK":
            if server is None or server.request.method != "INVITE":
                return [StrayAck(message, source)]
            effects = server.handle(TxInput.ACK, now, message)
            self._reap()
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
        deadlines = [
            deadline
            for tx in (*self._clients.values(), *self._servers.values())
            for deadline in tx.deadlines.values()
        ]
        return min(deadlines, default=None)

    def advance(self, now: float) -> list[Effect]:
        """Fire every timer due at or before ``now``, each at its own deadline."""
        effects: list[Effect] = []
        while True:
            due = [
                (deadline, index, tx, timer)
                for index, tx in enumerate((*self._clients.values(), *self._servers.values()))
                for timer, deadline in tx.deadlines.items()
                if deadline <= now
            ]
            if not due:
                break
            deadline, _, tx, timer = min(due, key=lambda item: (item[0], item[1]))
            del tx.deadlines[timer]
            effects += tx.handle(timer, deadline)
            self._reap()
        return effects

    def _reap(self) -> None:
        for table in (self._clients, self._servers):
            for key in [key for key, tx in table.items() if tx.state is TxState.TERMINATED]:
                del table[key]  # type: ignore[arg-type]

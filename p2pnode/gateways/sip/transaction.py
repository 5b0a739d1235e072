"""RFC 3261 §17 transactions (with RFC 6026's Accepted state), sans-IO, in virtual time.

Four state machines (client/server x INVITE/non-INVITE), each a table from
``(state, input)`` to a handler; a pair missing from a table raises
:class:`TransactionStateError` (a bug in the caller, never a network event:
every network input has an entry, often "absorb"). Timers A-M are deadlines
in the caller's clock: ``advance(now)`` fires the expired ones, and
``next_deadline()`` says when to call it again.

``transaction_layer.TransactionLayer`` owns the transactions and matches
messages to them; this module is the machines, their keys and their effects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pnode.gateways.sip.message import Header, SipMessage, SipRequest, SipResponse

__all__ = [
    "CLIENT_INVITE",
    "CLIENT_NON_INVITE",
    "MAGIC_COOKIE",
    "SERVER_INVITE",
    "SERVER_NON_INVITE",
    "TABLES",
    "Address",
    "ClientKey",
    "Effect",
    "RequestReceived",
    "ResponseReceived",
    "ServerKey",
    "StrayAck",
    "StrayResponse",
    "Terminated",
    "TimedOut",
    "Timers",
    "Transaction",
    "TransactionStateError",
    "Transmit",
    "TxInput",
    "TxState",
    "client_key",
    "response_input",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17.1.1.1 / Table 4 timer bases, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0  # Timer D for unreliable transports (>= 32 s)


class TransactionStateError(RuntimeError):
    """An input the state machine does not define for its state: a caller bug."""


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"  # RFC 6026 §7.1 / §7.2
    TERMINATED = "terminated"


class TxInput(enum.Enum):
    """Inputs of the four machines."""

    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    REQUEST = "request retransmission"
    ACK = "ack"
    TU_PROVISIONAL = "tu 1xx"
    TU_SUCCESS = "tu 2xx"
    TU_FAILURE = "tu 3xx-6xx"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


# -- keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientKey:
    """§17.1.3: branch of the top Via and the CSeq method."""

    branch: str
    method: str


@dataclass(frozen=True, slots=True)
class ServerKey:
    """§17.2.3: branch, sent-by and method (ACK matches its INVITE)."""

    branch: str
    sent_by: tuple[str, int]
    method: str


def client_key(message: SipMessage) -> ClientKey | None:
    branch = message.top_via.branch
    if branch is None:
        return None
    return ClientKey(branch, message.cseq.method)


def server_key(request: SipRequest) -> ServerKey:
    """The server transaction a request belongs to.

    A branch without the magic cookie (RFC 2543 peers, RFC 4475 §3.4.1) is
    replaced by the §17.2.3 fallback identity: Request-URI, tags, Call-ID,
    CSeq number and top Via, which is what RFC 2543 matching compared.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE) or branch == MAGIC_COOKIE:
        uri = "" if request.method == "ACK" else str(request.uri)  # ACK carries the same URI
        branch = "|".join(
            (
                "rfc2543",
                uri,
                request.from_.tag or "",
                request.call_id,
                str(request.cseq.number),
                str(via),
            )
        )
    return ServerKey(branch, via.sent_by, method)


# -- effects ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``message`` to ``destination`` (the adapter serializes and writes it)."""

    message: SipMessage
    destination: Address
    reliable: bool = False  # over the stream the transaction's request came on


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request: the TU must answer it with ``TransactionLayer.respond(key, ...)``."""

    key: ServerKey
    request: SipRequest
    source: Address
    reliable: bool = False  # it came over a stream (TCP/TLS)


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    key: ClientKey
    response: SipResponse


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B/F (no final response) or H (no ACK for a final response)."""

    key: ClientKey | ServerKey


@dataclass(frozen=True, slots=True)
class Terminated:
    key: ClientKey | ServerKey


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (e.g. a retransmitted 2xx, §13.2.2.4)."""

    response: SipResponse
    source: Address


@dataclass(frozen=True, slots=True)
class StrayAck:
    """An ACK matching no server transaction: the ACK for a 2xx, for the dialog layer."""

    request: SipRequest
    source: Address


Effect = (
    Transmit | RequestReceived | ResponseReceived | TimedOut | Terminated | StrayResponse | StrayAck
)


# -- the four machines ---------------------------------------------------------------


_Handler = Callable[["Transaction", float, "SipMessage | None"], "list[Effect]"]


@dataclass
class Transaction:
    """State shared by the four machines; ``table`` chooses the behaviour."""

    key: ClientKey | ServerKey
    request: SipRequest
    peer: Address
    reliable: bool
    timers: Timers
    state: TxState
    table: dict[
        tuple[TxState, TxInput], Callable[[Transaction, float, SipMessage | None], list[Effect]]
    ]
    deadlines: dict[TxInput, float] = field(default_factory=dict)
    intervals: dict[TxInput, float] = field(default_factory=dict)
    last_response: SipResponse | None = None
    ack: SipRequest | None = None
    # Called with (deadline, self, timer) whenever a timer is armed: the layer's heap.
    on_arm: Callable[[float, Transaction, TxInput], None] | None = field(
        default=None, compare=False, repr=False
    )

    def handle(self, event: TxInput, now: float, message: SipMessage | None = None) -> list[Effect]:
        handler = self.table.get((self.state, event))
        if handler is None:
            raise TransactionStateError(f"{event.value} undefined in {self.state.value}")
        return handler(self, now, message)

    def arm(self, timer: TxInput, now: float, interval: float) -> None:
        self.intervals[timer] = interval
        self.deadlines[timer] = now + interval
        if self.on_arm is not None:
            self.on_arm(now + interval, self, timer)

    def disarm(self, *timers: TxInput) -> None:
        for timer in timers:
            self.deadlines.pop(timer, None)

    def to(self, state: TxState) -> list[Effect]:
        self.state = state
        if state is TxState.TERMINATED:
            self.deadlines.clear()
            return [Terminated(self.key)]
        return []

    def transmit(self, message: SipMessage) -> Transmit:
        return Transmit(message, self.peer, self.reliable)


def _absorb(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    return []


def _pass_up(tx: Transaction, message: SipMessage | None) -> list[Effect]:
    assert isinstance(message, SipResponse) and isinstance(tx.key, ClientKey)
    return [ResponseReceived(tx.key, message)]


def _non_2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """§17.1.1.3: the ACK the client transaction sends for a 300-699 response."""
    headers = [Header("Via", str(invite.top_via)), Header("Max-Forwards", "70")]
    headers += [header for header in invite.headers if header.name in ("From", "Call-ID")]
    headers.append(Header("To", response.header("To") or ""))
    headers.append(Header("CSeq", f"{invite.cseq.number} ACK"))
    headers += [header for header in invite.headers if header.name == "Route"]
    headers.append(Header("Content-Length", "0"))
    return SipRequest.build("ACK", invite.uri, tuple(headers), b"")


# Client INVITE (§17.1.1, RFC 6026 §7.2).
def _ci_timer_a(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.arm(TxInput.TIMER_A, now, tx.intervals[TxInput.TIMER_A] * 2)
    return [tx.transmit(tx.request)]


def _ci_timer_b(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    return [TimedOut(tx.key), *tx.to(TxState.TERMINATED)]


def _ci_provisional(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.disarm(TxInput.TIMER_A, TxInput.TIMER_B)
    tx.state = TxState.PROCEEDING
    return _pass_up(tx, message)


def _ci_success(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.disarm(TxInput.TIMER_A, TxInput.TIMER_B)
    tx.arm(TxInput.TIMER_M, now, 64 * tx.timers.t1)
    tx.state = TxState.ACCEPTED
    return _pass_up(tx, message)


def _ci_failure(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    assert isinstance(message, SipResponse)
    tx.disarm(TxInput.TIMER_A, TxInput.TIMER_B)
    tx.ack = _non_2xx_ack(tx.request, message)
    tx.arm(TxInput.TIMER_D, now, 0.0 if tx.reliable else tx.timers.d)
    tx.state = TxState.COMPLETED
    return [tx.transmit(tx.ack), *_pass_up(tx, message)]


def _ci_failure_again(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    assert tx.ack is not None
    return [tx.transmit(tx.ack)]


def _ci_accepted_success(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    return _pass_up(tx, message)  # retransmitted 2xx: the TU sends its ACK again


def _terminate(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    return tx.to(TxState.TERMINATED)


CLIENT_INVITE: dict[tuple[TxState, TxInput], _Handler] = {
    (TxState.CALLING, TxInput.TIMER_A): _ci_timer_a,
    (TxState.CALLING, TxInput.TIMER_B): _ci_timer_b,
    (TxState.CALLING, TxInput.PROVISIONAL): _ci_provisional,
    (TxState.CALLING, TxInput.SUCCESS): _ci_success,
    (TxState.CALLING, TxInput.FAILURE): _ci_failure,
    (TxState.PROCEEDING, TxInput.PROVISIONAL): _ci_provisional,
    (TxState.PROCEEDING, TxInput.SUCCESS): _ci_success,
    (TxState.PROCEEDING, TxInput.FAILURE): _ci_failure,
    (TxState.COMPLETED, TxInput.PROVISIONAL): _absorb,
    (TxState.COMPLETED, TxInput.SUCCESS): _absorb,
    (TxState.COMPLETED, TxInput.FAILURE): _ci_failure_again,
    (TxState.COMPLETED, TxInput.TIMER_D): _terminate,
    (TxState.ACCEPTED, TxInput.PROVISIONAL): _absorb,
    (TxState.ACCEPTED, TxInput.SUCCESS): _ci_accepted_success,
    (TxState.ACCEPTED, TxInput.FAILURE): _absorb,
    (TxState.ACCEPTED, TxInput.TIMER_M): _terminate,
}


# Client non-INVITE (§17.1.2).
def _cn_timer_e(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    if tx.state is TxState.TRYING:
        interval = min(tx.intervals[TxInput.TIMER_E] * 2, tx.timers.t2)
    else:
        interval = tx.timers.t2
    tx.arm(TxInput.TIMER_E, now, interval)
    return [tx.transmit(tx.request)]


def _cn_provisional(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.state = TxState.PROCEEDING
    return _pass_up(tx, message)


def _cn_final(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.disarm(TxInput.TIMER_E, TxInput.TIMER_F)
    tx.arm(TxInput.TIMER_K, now, 0.0 if tx.reliable else tx.timers.t4)
    tx.state = TxState.COMPLETED
    return _pass_up(tx, message)


CLIENT_NON_INVITE: dict[tuple[TxState, TxInput], _Handler] = {
    (TxState.TRYING, TxInput.TIMER_E): _cn_timer_e,
    (TxState.TRYING, TxInput.TIMER_F): _ci_timer_b,
    (TxState.TRYING, TxInput.PROVISIONAL): _cn_provisional,
    (TxState.TRYING, TxInput.SUCCESS): _cn_final,
    (TxState.TRYING, TxInput.FAILURE): _cn_final,
    (TxState.PROCEEDING, TxInput.TIMER_E): _cn_timer_e,
    (TxState.PROCEEDING, TxInput.TIMER_F): _ci_timer_b,
    (TxState.PROCEEDING, TxInput.PROVISIONAL): _cn_provisional,
    (TxState.PROCEEDING, TxInput.SUCCESS): _cn_final,
    (TxState.PROCEEDING, TxInput.FAILURE): _cn_final,
    (TxState.COMPLETED, TxInput.PROVISIONAL): _absorb,
    (TxState.COMPLETED, TxInput.SUCCESS): _absorb,
    (TxState.COMPLETED, TxInput.FAILURE): _absorb,
    (TxState.COMPLETED, TxInput.TIMER_K): _terminate,
}


# Server INVITE (§17.2.1, RFC 6026 §7.1).
def _resend_last(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    return [] if tx.last_response is None else [tx.transmit(tx.last_response)]


def _tu_send(tx: Transaction, message: SipMessage | None) -> list[Effect]:
    assert isinstance(message, SipResponse)
    tx.last_response = message
    return [tx.transmit(message)]


def _si_tu_provisional(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    return _tu_send(tx, message)


def _si_tu_success(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.arm(TxInput.TIMER_L, now, 64 * tx.timers.t1)
    tx.state = TxState.ACCEPTED
    return _tu_send(tx, message)


def _si_accepted_success(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    return _tu_send(tx, message)  # the UAS core retransmits its 2xx (§13.3.1.4)


def _si_tu_failure(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    if not tx.reliable:
        tx.arm(TxInput.TIMER_G, now, tx.timers.t1)
    tx.arm(TxInput.TIMER_H, now, 64 * tx.timers.t1)
    tx.state = TxState.COMPLETED
    return _tu_send(tx, message)


def _si_timer_g(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.arm(TxInput.TIMER_G, now, min(tx.intervals[TxInput.TIMER_G] * 2, tx.timers.t2))
    return _resend_last(tx, now, message)


def _si_ack(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.disarm(TxInput.TIMER_G, TxInput.TIMER_H)
    tx.arm(TxInput.TIMER_I, now, 0.0 if tx.reliable else tx.timers.t4)
    tx.state = TxState.CONFIRMED
    return []


def _si_accepted_ack(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    assert isinstance(message, SipRequest)
    return [StrayAck(message, tx.peer)]  # RFC 6026 §7.1: passed to the TU


SERVER_INVITE: dict[tuple[TxState, TxInput], _Handler] = {
    (TxState.PROCEEDING, TxInput.REQUEST): _resend_last,
    (TxState.PROCEEDING, TxInput.TU_PROVISIONAL): _si_tu_provisional,
    (TxState.PROCEEDING, TxInput.TU_SUCCESS): _si_tu_success,
    (TxState.PROCEEDING, TxInput.TU_FAILURE): _si_tu_failure,
    (TxState.PROCEEDING, TxInput.ACK): _absorb,
    (TxState.COMPLETED, TxInput.REQUEST): _resend_last,
    (TxState.COMPLETED, TxInput.ACK): _si_ack,
    (TxState.COMPLETED, TxInput.TIMER_G): _si_timer_g,
    (TxState.COMPLETED, TxInput.TIMER_H): _ci_timer_b,
    (TxState.CONFIRMED, TxInput.REQUEST): _absorb,
    (TxState.CONFIRMED, TxInput.ACK): _absorb,
    (TxState.CONFIRMED, TxInput.TIMER_I): _terminate,
    (TxState.ACCEPTED, TxInput.REQUEST): _absorb,
    (TxState.ACCEPTED, TxInput.ACK): _si_accepted_ack,
    (TxState.ACCEPTED, TxInput.TU_SUCCESS): _si_accepted_success,
    (TxState.ACCEPTED, TxInput.TIMER_L): _terminate,
}


# Server non-INVITE (§17.2.2).
def _sn_tu_provisional(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.state = TxState.PROCEEDING
    return _tu_send(tx, message)


def _sn_tu_final(tx: Transaction, now: float, message: SipMessage | None) -> list[Effect]:
    tx.arm(TxInput.TIMER_J, now, 0.0 if tx.reliable else 64 * tx.timers.t1)
    tx.state = TxState.COMPLETED
    return _tu_send(tx, message)


SERVER_NON_INVITE: dict[tuple[TxState, TxInput], _Handler] = {
    (TxState.TRYING, TxInput.REQUEST): _absorb,
    (TxState.TRYING, TxInput.TU_PROVISIONAL): _sn_tu_provisional,
    (TxState.TRYING, TxInput.TU_SUCCESS): _sn_tu_final,
    (TxState.TRYING, TxInput.TU_FAILURE): _sn_tu_final,
    (TxState.PROCEEDING, TxInput.REQUEST): _resend_last,
    (TxState.PROCEEDING, TxInput.TU_PROVISIONAL): _sn_tu_provisional,
    (TxState.PROCEEDING, TxInput.TU_SUCCESS): _sn_tu_final,
    (TxState.PROCEEDING, TxInput.TU_FAILURE): _sn_tu_final,
    (TxState.COMPLETED, TxInput.REQUEST): _resend_last,
    (TxState.COMPLETED, TxInput.TIMER_J): _terminate,
}

TABLES = {
    "client-invite": CLIENT_INVITE,
    "client-non-invite": CLIENT_NON_INVITE,
    "server-invite": SERVER_INVITE,
    "server-non-invite": SERVER_NON_INVITE,
}


def response_input(status: int, *, tu: bool) -> TxInput:
    if status < 200:
        return TxInput.TU_PROVISIONAL if tu else TxInput.PROVISIONAL
    if status < 300:
        return TxInput.TU_SUCCESS if tu else TxInput.SUCCESS
    return TxInput.TU_FAILURE if tu else TxInput.FAILURE

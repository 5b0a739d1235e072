"""One STUN Binding round trip as a sans-IO core: the health check's request and its RTT.

Why its own core: a relay or STUN server is judged alive by one Binding answer,
and its retransmissions must follow RFC 8489 §6.2.1 like every other client
request here, so it runs on ``ClientTransaction`` instead of a timer loop of its
own. ``budget_policy`` spreads ``attempts`` sends with a doubling RTO over a
total time budget. Shaped for ``nat.driver.DatagramDriver``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nat.stun.attributes import Address, XorMappedAddress
from nat.stun.message import StunClass, StunMessage, StunMethod, decode_message, encode_message
from nat.stun.transaction import ClientTransaction, RetransmitPolicy, TransactionState

__all__ = ["MAX_PROBE_RESPONSE_BYTES", "BindingProbe", "ProbeSend", "budget_policy"]

MAX_PROBE_RESPONSE_BYTES = 2048  # larger datagrams are not a Binding answer we accept


def budget_policy(time_budget: float, attempts: int) -> RetransmitPolicy:
    """``attempts`` sends at RTOs of 1, 2, 4 ... units, the last wait included, in ``time_budget``.

    With Rc = attempts and Rm = 2^(attempts-1), RFC 8489's schedule ends at
    unit * (2^attempts - 1), which is the budget.
    """
    attempts = max(attempts, 1)
    unit = time_budget / (2**attempts - 1)
    return RetransmitPolicy(rto=unit, rc=attempts, rm=2 ** (attempts - 1))


@dataclass(frozen=True)
class ProbeSend:
    """The request (again); ``local`` None: from the driver's default socket."""

    data: bytes
    remote: Address
    local: Address | None = None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


class BindingProbe:
    """Sends one Binding request to ``server``; ``rtt`` is set by the matching success."""

    def __init__(
        self, server: Address, transaction_id: bytes, policy: RetransmitPolicy, now: float
    ) -> None:
        if len(transaction_id) != 12:
            raise ValueError("a STUN transaction id is 12 bytes")
        self._server = server
        self._server_ip = _ip(server[0])
        self._transaction_id = transaction_id
        self._transaction = ClientTransaction(policy, now)
        self._started = now
        self._request = encode_message(
            StunMessage(StunMethod.BINDING, StunClass.REQUEST, transaction_id), fingerprint=True
        )
        self.rtt: float | None = None
        self.mapped: Address | None = None

    @property
    def done(self) -> bool:
        return self._transaction.state is not TransactionState.WAITING

    def first(self) -> list[ProbeSend]:
        """The first copy, to send at the ``now`` given to the constructor."""
        return [ProbeSend(self._request, self._server)]

    def handle_datagram(
        self, data: bytes, source: Address, local: Address, now: float
    ) -> list[ProbeSend]:
        """A possible answer. Undecodable bytes raise ``StunDecodeError`` (the driver counts
        them); anything else that is not our success is ignored."""
        if self.done or len(data) > MAX_PROBE_RESPONSE_BYTES or not self._from_server(source):
            return []
        message = decode_message(data)
        mapped = message.get(XorMappedAddress)
        if (
            message.transaction_id == self._transaction_id
            and message.method is StunMethod.BINDING
            and message.cls is StunClass.SUCCESS
            and mapped is not None
        ):
            self._transaction.on_response()
            self.rtt = now - self._started
            self.mapped = mapped.address
        return []

    def handle_timer(self, now: float) -> list[ProbeSend]:
        """Retransmit when the schedule says so; past the last wait the probe has failed."""
        return self.first() if self._transaction.on_timer(now) else []

    def next_deadline(self) -> float | None:
        return self._transaction.next_deadline()

    def _from_server(self, source: Address) -> bool:
        if source[1] != self._server[1]:
            return False
        # A server named by host name: the 96-bit transaction id is the only check left.
        return self._server_ip is None or _ip(source[0]) == self._server_ip

"""A sans-IO STUN server: Binding (RFC 8489), RFC 5780 discovery features, DIAL-BACK probes.

Bytes, source, the local address it arrived on and ``now`` go in; ``Transmit``
values (datagram, local address to send from, destination) come out. The asyncio
adapter (``nat.endpoint``) only binds sockets and moves bytes.

With an alternate IP and/or port the server owns up to four local addresses
(RFC 5780 §4.1: "the server ... has two IP addresses and two ports").

Invariants:
- Every response goes to the request's source IP (RESPONSE-PORT may change
  only the port, RFC 5780 §6.1), and so does every DIAL-BACK probe: no
  amplification towards third parties. Responses are about as large as requests.
- Bad input is dropped and counted by reason (``nat.drops.DropCounter``); a
  request from a source over its rate limit is dropped before decoding.
- ``handle_binding`` is a pure function, so a TURN server can answer Binding on
  its own port with the same code.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, replace

from nat.drops import DropCounter
from nat.ratelimit import RateLimit, SourceRateLimiter
from nat.stun.attributes import (
    Address,
    ChangeRequest,
    DialBack,
    ErrorCode,
    MappedAddress,
    OtherAddress,
    ResponseOrigin,
    ResponsePort,
    Software,
    UnknownAttributes,
    XorMappedAddress,
)
from nat.stun.message import (
    StunAttributeError,
    StunClass,
    StunDecodeError,
    StunMessage,
    StunMethod,
    decode_message,
    encode_message,
    looks_like_stun,
)

__all__ = [
    "DEFAULT_DIAL_BACK_LIMIT",
    "DEFAULT_REQUEST_LIMIT",
    "DEFAULT_SOFTWARE",
    "StunServer",
    "StunServerStats",
    "Transmit",
    "error_response",
    "handle_binding",
]

DEFAULT_SOFTWARE = "p2pnode STUN"
# A NAT discovery run needs ~10 requests; a node refreshes its mapping every ~20 s.
DEFAULT_REQUEST_LIMIT = RateLimit(rate=20.0, burst=40.0)
# Dial-back probes cost us a packet to a port we did not hear from: much stricter.
DEFAULT_DIAL_BACK_LIMIT = RateLimit(rate=0.5, burst=4.0)

# RFC 8489 §14.8 suggested reason phrases.
_REASONS = {
    400: "Bad Request",
    420: "Unknown Attribute",
}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transmit:
    """Send ``data`` to ``remote`` from local address ``local``.

    ``local is None`` means "from the dial-back socket", which is none of the
    listening addresses, so a NAT that filters by port drops it.
    """

    data: bytes
    local: Address | None
    remote: Address


@dataclass(frozen=True)
class StunServerStats:
    """A snapshot of what the server did."""

    responses: int
    error_responses: int
    dial_backs: int
    drops: dict[str, int]


def error_response(
    request: StunMessage, code: int, *, unknown: tuple[int, ...] = ()
) -> StunMessage:
    """An error response to ``request`` (RFC 8489 §6.3.1.1); 420 lists the unknown types."""
    attributes: list[ErrorCode | UnknownAttributes | Software] = [
        ErrorCode(code, _REASONS.get(code, "Error"))
    ]
    if unknown:
        attributes.append(UnknownAttributes(unknown))
    attributes.append(Software(DEFAULT_SOFTWARE))
    return StunMessage(request.method, StunClass.ERROR, request.transaction_id, tuple(attributes))


def handle_binding(
    request: StunMessage,
    source: Address,
    response_origin: Address,
    *,
    other_address: Address | None = None,
    software: str = DEFAULT_SOFTWARE,
) -> StunMessage:
    """The Binding success response for ``request`` from ``source``.

    RFC 8489 §6.3.1.1: "the server MUST add an XOR-MAPPED-ADDRESS attribute";
    MAPPED-ADDRESS too for RFC 3489-era clients. RFC 5780 §6.1: "The server MUST
    include a RESPONSE-ORIGIN attribute" and OTHER-ADDRESS when it has an
    alternate address. ``response_origin`` is the address the reply leaves from.
    """
    attributes: list[
        XorMappedAddress | MappedAddress | ResponseOrigin | OtherAddress | Software
    ] = [XorMappedAddress(source), MappedAddress(source), ResponseOrigin(response_origin)]
    if other_address is not None:
        attributes.append(OtherAddress(other_address))
    attributes.append(Software(software))
    return StunMessage(
        StunMethod.BINDING, StunClass.SUCCESS, request.transaction_id, tuple(attributes)
    )


def _same_family(a: str, b: str) -> bool:
    return ipaddress.ip_address(a).version == ipaddress.ip_address(b).version


class StunServer:
    """The server core: ``handle_datagram`` in, ``Transmit`` list out."""

    def __init__(
        self,
        primary: Address,
        *,
        alt_ip: str | None = None,
        alt_port: int | None = None,
        drops: DropCounter | None = None,
        request_limit: RateLimit = DEFAULT_REQUEST_LIMIT,
        dial_back_limit: RateLimit = DEFAULT_DIAL_BACK_LIMIT,
        software: str = DEFAULT_SOFTWARE,
        dial_back: bool = False,
    ) -> None:
        """``dial_back``: serve DIAL-BACK probes (``Transmit.local is None``); only an
        owner with a dial-back socket (``nat.endpoint.StunService``) may turn it on,
        since the response promises the probe."""
        if alt_ip is not None and not _same_family(primary[0], alt_ip):
            raise ValueError("the alternate IP must be of the primary's address family")
        if alt_port is not None and alt_port == primary[1]:
            raise ValueError("the alternate port must differ from the primary port")
        self.primary = primary
        self._ips = (primary[0], alt_ip) if alt_ip is not None else (primary[0],)
        self._ports = (primary[1], alt_port) if alt_port is not None else (primary[1],)
        self._now = 0.0
        # Without a counter of the caller's, ours reads the time of the last datagram.
        self._drops = drops or DropCounter(logger, lambda: self._now)
        self._request_limit = SourceRateLimiter(request_limit)
        self._dial_back_limit = SourceRateLimiter(dial_back_limit)
        self._software = software
        self._serve_dial_back = dial_back
        self._responses = 0
        self._errors = 0
        self._dial_backs = 0

    @property
    def local_addresses(self) -> tuple[Address, ...]:
        """Every address to listen on: primary first, then (IP1,P2), (IP2,P1), (IP2,P2)."""
        return tuple((ip, port) for ip in self._ips for port in self._ports)

    @property
    def other_address(self) -> Address | None:
        """RFC 5780 OTHER-ADDRESS as seen from the primary address."""
        if len(self._ips) == 1 and len(self._ports) == 1:
            return None
        return (self._ips[-1], self._ports[-1])

    def statistics(self) -> StunServerStats:
        return StunServerStats(
            self._responses, self._errors, self._dial_backs, dict(self._drops.counts())
        )

    def _other_address(self, local: Address) -> Address | None:
        """RFC 5780 §7.4 OTHER-ADDRESS for a request received on ``local``: "the source
        IP address and port that would be used if the client requested the 'change
        IP' and 'change port' behavior" (as much of it as we have)."""
        if self.other_address is None:
            return None
        return self._other(local, len(self._ips) > 1, len(self._ports) > 1)

    def _other(self, local: Address, change_ip: bool, change_port: bool) -> Address | None:
        """The address differing from ``local`` in IP and/or port, if we have it."""
        ip, port = local
        if change_ip:
            if len(self._ips) == 1:
                return None
            ip = self._ips[1] if ip == self._ips[0] else self._ips[0]
        if change_port:
            if len(self._ports) == 1:
                return None
            port = self._ports[1] if port == self._ports[0] else self._ports[0]
        return (ip, port)

    def handle_timer(self, now: float) -> list[Transmit]:
        """Nothing is ever due: the server keeps no timers (rate limits refill lazily)."""
        self._now = now
        return []

    def next_deadline(self) -> float | None:
        """None: see ``handle_timer`` (the shape ``nat.driver.DatagramCore`` asks for)."""
        return None

    def handle_datagram(
        self, data: bytes, source: Address, local: Address, now: float
    ) -> list[Transmit]:
        """One received datagram in, the datagrams to send out (often one, maybe none)."""
        self._now = now
        if local not in self.local_addresses:
            self._drops.drop("stun: unknown local address", str(local))
            return []
        if not looks_like_stun(data):
            self._drops.drop("stun: not a STUN message", f"{len(data)} bytes from {source[0]}")
            return []
        if not self._request_limit.allow(source[0], now):
            self._drops.drop("stun: rate limited", source[0])
            return []
        try:
            request = decode_message(data)
        except StunAttributeError as error:
            if error.cls is not StunClass.REQUEST:
                self._drops.drop("stun: malformed attribute", str(error))
                return []
            bad = StunMessage(error.method, error.cls, error.transaction_id)
            return [self._reply(error_response(bad, 400), local, source)]
        except StunDecodeError as error:
            self._drops.drop("stun: malformed", str(error))
            return []
        if request.cls is StunClass.INDICATION:
            return []  # RFC 8489 §6.3.2: Binding indications are keepalives; no response
        if request.cls is not StunClass.REQUEST:
            self._drops.drop("stun: unexpected response", source[0])
            return []
        if request.method is not StunMethod.BINDING:
            return [self._reply(error_response(request, 400), local, source)]
        return self._binding(request, source, local, now)

    def _binding(
        self, request: StunMessage, source: Address, local: Address, now: float
    ) -> list[Transmit]:
        # RFC 8489 §6.3.1: "If the request contains one or more unknown
        # comprehension-required attributes, the server replies with an error
        # response with an error code of 420 (Unknown Attribute) and includes an
        # UNKNOWN-ATTRIBUTES attribute".
        unknown = request.unknown_comprehension_required()
        if unknown:
            return [self._reply(error_response(request, 420, unknown=unknown), local, source)]
        change = request.get(ChangeRequest) or ChangeRequest()
        origin = self._other(local, change.change_ip, change.change_port)
        if origin is None:
            # RFC 5780 §6.1: "If the server ... does not have an alternate address
            # and port, the server MUST generate an error response of type 420."
            kinds = (ChangeRequest.TYPE,)
            return [self._reply(error_response(request, 420, unknown=kinds), local, source)]
        destination = source
        response_port = request.get(ResponsePort)
        if response_port is not None:
            # RFC 5780 §6.1: send "to the source IP address of the Binding Request
            # and the port contained in the RESPONSE-PORT attribute".
            if response_port.port == 0:
                return [self._reply(error_response(request, 400), local, source)]
            destination = (source[0], response_port.port)
        response = handle_binding(
            request,
            source,
            origin,
            other_address=self._other_address(local),
            software=self._software,
        )
        probes: list[Transmit] = []
        dial_back = request.get(DialBack) if self._serve_dial_back else None
        if dial_back is not None:
            probes = self._dial_back(request, source, dial_back, now)
            if probes:
                # Echoing DIAL-BACK says "a probe is on its way", so a requester can
                # tell "filtered" from "this server does not dial back".
                port = probes[0].remote[1]
                response = replace(response, attributes=(*response.attributes, DialBack(port)))
        return [self._reply(response, origin, destination), *probes]

    def _dial_back(
        self, request: StunMessage, source: Address, dial_back: DialBack, now: float
    ) -> list[Transmit]:
        """One probe Binding request to the requester's observed IP, from the dial-back socket.

        The probe reuses the request's transaction id, so the requester knows
        which of its questions it answers; port 0 means "the observed port".
        """
        if not self._dial_back_limit.allow(source[0], now):
            self._drops.drop("stun: dial-back rate limited", source[0])
            return []
        port = dial_back.port or source[1]
        probe = StunMessage(
            StunMethod.BINDING,
            StunClass.REQUEST,
            request.transaction_id,
            (XorMappedAddress(source), Software(self._software)),
        )
        self._dial_backs += 1
        # Invariant: the destination IP is source[0], always.
        return [Transmit(encode_message(probe, fingerprint=True), None, (source[0], port))]

    def _reply(self, response: StunMessage, local: Address, remote: Address) -> Transmit:
        if response.cls is StunClass.ERROR:
            self._errors += 1
        else:
            self._responses += 1
        return Transmit(encode_message(response, fingerprint=True), local, remote)

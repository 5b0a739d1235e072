"""asyncio adapters: SIP over UDP, TCP and TLS, and a stack that drives timers.

Thin by design: bytes in, :mod:`parser` decodes, :func:`stamp_received` notes
the real source (RFC 3581), the handler gets a message; the core's effects
come back as :class:`Transmit` and are written out. Everything a peer sends
that cannot be decoded is dropped, counted by reason and logged at most once
a minute per reason; a request that failed to parse but can still be answered
(RFC 4475's 505 for ``SIP/7.0``) gets its status as a response.

Streams: RFC 5626 §3.5.1 CRLF keep-alives are answered (a double CRLF ping
gets a single CRLF pong); a framing error answers if it can and closes; at
most ``max_connections`` connections, each closed after ``idle_timeout``
seconds without bytes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from nat.drops import DropCounter
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    error_response,
    stamp_received,
)
from p2pnode.gateways.sip.parser import KeepAlive, SipStreamDecoder, parse_datagram, serialize
from p2pnode.gateways.sip.transaction import Address, ClientKey, Effect, ServerKey, Transmit
from p2pnode.gateways.sip.transaction_layer import TransactionLayer

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "TLS_HANDSHAKE_TIMEOUT",
    "MessageHandler",
    "SipStack",
    "SipTransport",
]

_log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_IDLE_TIMEOUT = 600.0  # longer than any registration refresh phones use over TCP
TLS_HANDSHAKE_TIMEOUT = 10.0

MessageHandler = Callable[[SipMessage, Address, bool], None]  # message, source, reliable


def _key(address: tuple[object, ...]) -> Address:
    return (str(address[0]), int(str(address[1])))


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._owner._datagram(data, _key(addr))

    def error_received(self, exc: Exception) -> None:
        self._owner.drops.drop("udp socket error", type(exc).__name__)


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self._decoder = SipStreamDecoder()
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._active = True
        self.tls = False  # a connection to our TLS listener (Via says TLS, not TCP)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        owner = self._owner
        if len(owner._connections) >= owner.max_connections:
            owner.drops.drop("tcp connection over capacity")
            transport.abort()
            return
        self.peer = _key(transport.get_extra_info("peername"))
        self.tls = transport.get_extra_info("ssl_object") is not None
        owner._connections[self.peer] = self
        self._idle = asyncio.get_running_loop().call_later(owner.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        if self.transport is None:
            return
        if not self._active:
            self.transport.close()
            return
        self._active = False
        self._idle = asyncio.get_running_loop().call_later(
            self._owner.idle_timeout, self._check_idle
        )

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.peer is None:
            return
        self._active = True
        try:
            items = self._decoder.feed(data)
        except SipDecodeError as error:
            # No resynchronisation in a byte stream: answer if possible, then hang up.
            self._owner._refuse(error, self.peer, reliable=True)
            self.transport.close()
            return
        for item in items:
            if item is KeepAlive.PING:
                self.transport.write(b"\r\n")  # RFC 5626 §4.4.1: the pong
            elif not isinstance(item, KeepAlive):
                self._owner._deliver(item, self.peer, reliable=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self.peer is not None and self._owner._connections.get(self.peer) is self:
            del self._owner._connections[self.peer]


class SipTransport:
    """UDP and TCP listeners on one host and port; ``send`` writes a message out."""

    def __init__(
        self,
        handler: MessageHandler,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._handler = handler
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.drops = DropCounter(_log, clock or (lambda: asyncio.get_running_loop().time()))
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[Address, _Tcp] = {}
        self._tls_servers: list[asyncio.Server] = []
        self.address: Address | None = None
        self.tls_address: Address | None = None

    async def start(self, host: str, port: int = 0) -> Address:
        """Bind UDP (port 0: any free port) and TCP on the same port; returns the address."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(20):  # the UDP port may be taken for TCP: try another
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(host, port), family=family
            )
            bound = _key(udp.get_extra_info("sockname"))
            try:
                self._server = await loop.create_server(
                    lambda: _Tcp(self), host, bound[1], family=family
                )
            except OSError:
                udp.close()
                if port:
                    raise
                continue
            self._udp = udp
            self.address = bound
            return bound
        raise OSError("no port free for both UDP and TCP")

    async def start_tls(self, host: str, port: int, context: ssl.SSLContext) -> Address:
        """A TLS listener (RFC 3261 §26.2, sips:) sharing the stream handling and caps.

        TLS >= 1.2 is required; a handshake must finish within
        ``TLS_HANDSHAKE_TIMEOUT`` seconds.
        """
        context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = await loop.create_server(
            lambda: _Tcp(self),
            host,
            port,
            family=family,
            ssl=context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
        )
        self._tls_servers.append(server)
        bound = _key(server.sockets[0].getsockname())
        self.tls_address = self.tls_address or bound
        return bound

    async def connect(self, destination: Address) -> None:
        """Open a TCP connection to ``destination`` (for requests sent over TCP)."""
        if destination in self._connections:
            return
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _Tcp(self), destination[0], destination[1])

    def sent_by(self, destination: Address, reliable: bool) -> str:
        """A Via's ``SIP/2.0/<transport> host:port`` for a message to ``destination``: TLS
        with the TLS listener's port on a TLS connection (RFC 3261 §18.1.1, §20.42),
        else TCP or UDP with the shared port."""
        connection = self._connections.get(destination) if reliable else None
        if connection is not None and connection.tls and self.tls_address is not None:
            host, port = self.tls_address
            name = "TLS"
        else:
            assert self.address is not None, "not started"
            host, port = self.address
            name = "TCP" if reliable else "UDP"
        return f"SIP/2.0/{name} {f'[{host}]' if ':' in host else host}:{port}"

    def send(self, message: SipMessage, destination: Address, *, reliable: bool) -> None:
        data = serialize(message)
        if reliable:
            connection = self._connections.get(destination)
            if connection is None or connection.transport is None:
                self.drops.drop("no tcp connection for an outgoing message")
                return
            connection.transport.write(data)
        elif self._udp is not None:
            self._udp.sendto(data, destination)

    async def close(self) -> None:
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for server in (self._server, *self._tls_servers):
            if server is not None:
                server.close()
                await server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    # -- input ----------------------------------------------------------------------------
    def _datagram(self, data: bytes, source: Address) -> None:
        if not data.strip(b"\r\n"):
            return  # a CRLF keep-alive over UDP: nothing to answer
        try:
            message = parse_datagram(data)
        except SipDecodeError as error:
            self._refuse(error, source, reliable=False)
            return
        self._deliver(message, source, reliable=False)

    def _refuse(self, error: SipDecodeError, source: Address, *, reliable: bool) -> None:
        self.drops.drop(f"undecodable SIP: {error.reason}")
        if not error.request_headers:
            return
        response = error_response(error.request_headers, error.status, error.reason)
        if response is not None:
            self.send(response, source, reliable=reliable)

    def _deliver(self, message: SipMessage, source: Address, *, reliable: bool) -> None:
        if isinstance(message, SipRequest):
            try:
                message = stamp_received(message, source)
            except SipDecodeError as error:
                self.drops.drop(f"unstampable Via: {error.reason}")
                return
        self._handler(message, source, reliable)


EventHandler = Callable[["SipStack", Effect], None]


class SipStack:
    """A transport plus a transaction layer, with one timer re-armed after every input.

    ``on_event`` receives every effect that is not a transmission
    (RequestReceived, ResponseReceived, TimedOut, Stray*): the TU answers
    with :meth:`respond` or starts transactions with :meth:`send_request`.
    """

    def __init__(self, on_event: EventHandler, *, layer: TransactionLayer | None = None) -> None:
        self.layer = layer or TransactionLayer()
        self.transport = SipTransport(self._received)
        self._on_event = on_event
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int = 0) -> Address:
        return await self.transport.start(host, port)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transport.close()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _received(self, message: SipMessage, source: Address, reliable: bool) -> None:
        self._apply(self.layer.receive(message, source, self._now(), reliable=reliable))

    def respond(self, key: ServerKey, response: SipResponse) -> None:
        self._apply(self.layer.respond(key, response, self._now()))

    def send_request(
        self, request: SipRequest, destination: Address, *, reliable: bool = False
    ) -> ClientKey:
        key, effects = self.layer.send_request(request, destination, self._now(), reliable=reliable)
        self._apply(effects)
        return key

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Transmit):
                self.transport.send(effect.message, effect.destination, reliable=effect.reliable)
            else:
                self._on_event(self, effect)
        self._rearm()

    def _rearm(self) -> None:
        deadline = self.layer.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() <= deadline:
                return  # an early wake-up only finds nothing due and re-arms
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._apply(self.layer.advance(self._now()))

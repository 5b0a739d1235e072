"""The asyncio runner around the TURN core: sockets in, ``Output`` commands out, one timer.

Thin by design (STYLE 1): it feeds bytes and ``loop.time()`` (monotonic; plus
wall time for REST credentials' expiry) to ``TurnServer``, executes what comes
back and re-arms one timer. It keeps its own loop instead of the shared
``nat.driver``: the ChannelData / peer-data fast path is what
``benchmarks/relay_throughput.py`` measures, and it needs batched
``add_reader`` draining and cached routes that a generic driver would not give.
UDP sockets (listeners and one per relayed address) are non-blocking and read
with ``loop.add_reader``, draining a bounded batch per wake-up: no protocol
objects, no per-packet futures, no per-packet dataclasses on the ChannelData / peer-data paths.

TURN over TCP (RFC 8656 §3.1): one asyncio protocol per connection cuts the
stream into STUN and ChannelData frames (``StreamFramer``); closing the
connection deletes its allocation. Connections are capped
(``MAX_TCP_CONNECTIONS``) and ones that never allocate are closed after
``TCP_IDLE_TIMEOUT``; a client that does not read has its excess dropped, as
UDP would, instead of buffered.

TURN over TLS (RFC 8656 §3.1, "TLS-over-TCP"): the same protocol behind
asyncio's TLS layer on separate listeners, for clients whose networks pass
only HTTPS-looking traffic (port 443). The core sees a TCP 5-tuple: framing,
allocation lifetime and closing are the same. Connections still in their
handshake are bounded by ``TLS_HANDSHAKE_TIMEOUT``; established ones count
against ``MAX_TCP_CONNECTIONS`` with the plain TCP ones.

Ownership: the service owns every socket, reader, server and timer it creates;
``close()`` releases them all. It starts no tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from time import time as wall_clock

from nat.drops import DropCounter
from nat.logsafe import RefusalLog
from relay.allocation import FiveTuple, Transport
from relay.channeldata import ChannelDataDecodeError, StreamFramer
from relay.messages import CloseRelay, OpenRelay, Output, RelayStatistics, ToClient, ToPeer
from relay.server import TurnServer

__all__ = ["MAX_TCP_CONNECTIONS", "RelayService", "ServiceAddresses"]

Address = tuple[str, int]
logger = logging.getLogger(__name__)

MAX_TCP_CONNECTIONS = 512
TCP_IDLE_TIMEOUT = 60.0  # a TCP client with no allocation after this is disconnected
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client has to finish its handshake
TCP_WRITE_LIMIT = 256 * 1024  # queued bytes per TCP client before we drop (media is lossy)
READ_BATCH = 64  # datagrams read per wake-up before yielding to the loop
OUTBOX_LIMIT = 256  # relayed datagrams held for one flush at most
MAX_DATAGRAM = 65535  # the largest UDP payload (IPv6 included), so nothing is truncated
SOCKET_BUFFER = 4 * 1024 * 1024

# Hot-path constants: an enum member read through its class costs a metaclass lookup.
_UDP = Transport.UDP
_new_tuple = tuple.__new__
_CHANNEL_HEADER = struct.Struct("!HH")  # RFC 8656 §12.4: channel number, length
# One relayed datagram in the outbox: (the socket's sendto, the bytes, the destination).
_Datagram = tuple[Callable[[bytes | bytearray, Address], int], bytes | bytearray, Address]


@dataclass(frozen=True)
class ServiceAddresses:
    """Where the service actually listens (ports resolved when 0 was asked)."""

    udp: tuple[Address, ...]
    tcp: tuple[Address, ...]
    tls: tuple[Address, ...] = ()


def _bound(servers: list[asyncio.Server]) -> tuple[Address, ...]:
    """Where stream servers listen (ports resolved)."""
    bound: list[Address] = []
    for server in servers:
        for sock in server.sockets:
            name = sock.getsockname()
            bound.append((name[0], name[1]))
    return tuple(bound)


def _udp_socket(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _TcpClient(asyncio.Protocol):
    """One TURN-over-TCP client connection."""

    def __init__(self, service: RelayService) -> None:
        self._service = service
        self._framer = StreamFramer(service._server.channel_max)
        self.transport: asyncio.Transport | None = None
        self.five_tuple: FiveTuple | None = None
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        service = self._service
        if len(service._tcp_clients) >= MAX_TCP_CONNECTIONS:
            service._drops.drop("tcp connection over capacity")
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.five_tuple = FiveTuple(Transport.TCP, (peer[0], peer[1]), (local[0], local[1]))
        service._tcp_clients[self.five_tuple] = self
        self._idle = asyncio.get_running_loop().call_later(TCP_IDLE_TIMEOUT, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self.five_tuple is None or self.transport is None:
            return
        if self._service._server.relayed_address(self.five_tuple) is None:
            self.transport.close()
        else:
            self._idle = asyncio.get_running_loop().call_later(TCP_IDLE_TIMEOUT, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.five_tuple is None or self.transport is None:
            return
        try:
            frames = self._framer.feed(data)
        except ChannelDataDecodeError as error:
            # No resynchronisation is possible in a byte stream: hang up.
            self._service._drops.drop("tcp stream unframed", str(error))
            self.transport.abort()
            return
        for frame in frames:
            self._service._from_client(self.five_tuple, frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.five_tuple is not None:
            service = self._service
            if service._tcp_clients.get(self.five_tuple) is self:
                del service._tcp_clients[self.five_tuple]
            if not service._closed:
                service._execute(service._server.client_closed(self.five_tuple, service._time()))
        self.transport = None

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > TCP_WRITE_LIMIT:
            self._service._drops.drop("tcp client not reading")
            return
        transport.write(data)


class RelayService:
    """Serve STUN + TURN for ``server`` on UDP and TCP listeners."""

    def __init__(
        self,
        server: TurnServer,
        *,
        udp: list[Address],
        tcp: list[Address],
        tls: list[Address] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: TURN-over-TLS listeners, served with ``ssl_context`` (a server context
        with its certificate chain loaded)."""
        if tls and ssl_context is None:
            raise ValueError("TLS listeners need an ssl_context")
        self._server = server
        self._udp_wanted = udp
        self._tcp_wanted = tcp
        self._tls_wanted = tls or []
        self._ssl_context = ssl_context
        self._tls_servers: list[asyncio.Server] = []
        self._closing_servers: list[asyncio.Server] = []  # closed, not yet waited for
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: dict[Address, socket.socket] = {}
        self._relays: dict[Address, socket.socket] = {}
        self._tcp_servers: list[asyncio.Server] = []
        self._tcp_clients: dict[FiveTuple, _TcpClient] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._closed = False
        self._drops = DropCounter(logger, self._time)
        self.refusal_log = RefusalLog(logger, self._time)
        self.send_errors = 0
        # Datagrams relayed between two of our own allocations without a kernel hop.
        self.hairpinned = 0
        # One receive buffer for every UDP socket (callbacks never nest): 4 bytes of room
        # in front so peer data becomes ChannelData in place.
        self._buffer = bytearray(_CHANNEL_HEADER.size + MAX_DATAGRAM)
        self._payload_view = memoryview(self._buffer)[_CHANNEL_HEADER.size :]
        # Relayed datagrams waiting for the end of this event-loop iteration (``_flush``).
        self._outbox: list[_Datagram] = []
        self._flush_scheduled = False

    # ----------------------------------------------------------------- life

    async def start(self) -> ServiceAddresses:
        """Bind every listener; raise OSError (after releasing what was bound) on failure."""
        self._loop = asyncio.get_running_loop()
        try:
            for address in self._udp_wanted:
                sock = _udp_socket(address)
                bound = sock.getsockname()
                key = (bound[0], bound[1])
                self._listeners[key] = sock
                self._loop.add_reader(sock.fileno(), self._on_listener, sock, key)
            udp_ports = {host: port for host, port in self._listeners}
            for host, port in self._tcp_wanted:
                # Port 0 for both: TCP takes the port UDP got, so clients need one number.
                same = udp_ports.get(host, 0) if port == 0 else port
                try:
                    tcp_server = await self._listen_tcp(host, same)
                except OSError:
                    if port != 0:
                        raise
                    tcp_server = await self._listen_tcp(host, 0)
                self._tcp_servers.append(tcp_server)
            for host, port in self._tls_wanted:
                self._tls_servers.append(await self._listen_tcp(host, port, self._ssl_context))
        except OSError:
            self.close()
            raise
        return ServiceAddresses(
            tuple(self._listeners), _bound(self._tcp_servers), _bound(self._tls_servers)
        )

    async def _listen_tcp(
        self, host: str, port: int, context: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        assert self._loop is not None
        return await self._loop.create_server(
            lambda: _TcpClient(self),
            host,
            port,
            reuse_address=True,
            ssl=context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if context is not None else None,
        )

    def close(self) -> None:
        """Release every socket, reader and timer (idempotent)."""
        self._closed = True
        self._outbox.clear()
        loop = self._loop
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sockets in (self._listeners, self._relays):
            for sock in sockets.values():
                if loop is not None:
                    loop.remove_reader(sock.fileno())
                sock.close()
            sockets.clear()
        for tcp_server in (*self._tcp_servers, *self._tls_servers):
            tcp_server.close()
        self._closing_servers.extend(self._tcp_servers + self._tls_servers)
        self._tcp_servers.clear()
        self._tls_servers.clear()
        for client in list(self._tcp_clients.values()):
            if client.transport is not None:
                client.transport.abort()
        self._tcp_clients.clear()

    async def __aenter__(self) -> RelayService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        closing, self._closing_servers = self._closing_servers, []
        for tcp_server in closing:
            await tcp_server.wait_closed()

    def statistics(self) -> RelayStatistics:
        return self._server.statistics()

    def service_drops(self) -> dict[str, int]:
        """Drops the runner itself made (send failures, TCP overflow), by reason."""
        return dict(self._drops.counts())

    # ------------------------------------------------------------ hot paths

    def _time(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _on_listener(self, sock: socket.socket, local: Address) -> None:
        """A client listener is readable: drain a bounded batch of datagrams.

        Per-packet cost matters here (see docs/relay.md, "Throughput"). ChannelData on a
        channel the core has a live route for is relayed right here: read into the
        preallocated buffer, one dict lookup, the expiry compare, ``admit`` (bandwidth
        cap and counters), and the payload joins the outbox. Anything else (a miss, a
        stale route, a short datagram, STUN) is copied out and given to the core.
        """
        server = self._server
        now = self._time()
        receive = sock.recvfrom_into
        buffer = self._buffer
        unpack = _CHANNEL_HEADER.unpack_from
        routes_get = server.client_routes(local).get
        relays = self._relays
        relays_get = relays.get
        outbox = self._outbox
        queue = outbox.append
        first_byte_max = server.channel_first_byte_max
        for _ in range(READ_BATCH):
            try:
                size, source = receive(buffer)
            except OSError:  # BlockingIOError when drained; ICMP-induced errors too
                break
            if size >= 4 and 64 <= buffer[0] <= first_byte_max:
                number, length = unpack(buffer)
                route = routes_get((source, number))
                if route is not None and now < route.expiry and size >= 4 + length:
                    if route.admit(length, now):
                        if route.peer in relays:
                            # Both ends on this relay: the peer is one of our relayed sockets.
                            self._hairpin(route.peer, route.relayed, length, now)
                            continue
                        relay_socket = relays_get(route.relayed)
                        if relay_socket is not None:
                            queue((relay_socket.sendto, buffer[4 : 4 + length], route.peer))
                    continue
            data = bytes(buffer[:size])
            # IPv4 gives (ip, port) already; IPv6 gives a 4-tuple.
            client = source if len(source) == 2 else (source[0], source[1])
            five_tuple = _new_tuple(FiveTuple, (_UDP, client, local))
            if size and 64 <= data[0] <= first_byte_max:
                relayed = server.channel_data_from_client(five_tuple, data, now)
                if relayed is not None:
                    self._to_peer(relayed[0], relayed[1], relayed[2], now)
                continue
            self._execute(server.handle_client(five_tuple, data, now, wall_clock()))
        self._outbox_filled(outbox)

    def _on_relay(self, sock: socket.socket, relayed: Address) -> None:
        """A relayed socket is readable: forward a bounded batch from peers to the client.

        The fast path reads the peer's datagram 4 bytes into the buffer and writes the
        ChannelData header in front of it in place: one copy of the message joins the
        outbox, no other per-packet object.
        """
        now = self._time()
        receive = sock.recvfrom_into
        buffer = self._buffer
        payload = self._payload_view
        pack = _CHANNEL_HEADER.pack_into
        routes_get = self._server.peer_routes(relayed).get
        listeners_get = self._listeners.get
        outbox = self._outbox
        queue = outbox.append
        for _ in range(READ_BATCH):
            try:
                size, source = receive(payload)
            except OSError:
                break
            route = routes_get(source)
            if route is not None and now < route.expiry:
                if route.admit(size, now):
                    listener = listeners_get(route.server)
                    if listener is not None:
                        pack(buffer, 0, route.number, size)
                        queue((listener.sendto, buffer[: 4 + size], route.client))
                continue
            peer = source if len(source) == 2 else (source[0], source[1])
            self._from_peer_slow(relayed, bytes(payload[:size]), peer, now)
        self._outbox_filled(outbox)

    def _from_peer_slow(self, relayed: Address, data: bytes, peer: Address, now: float) -> None:
        """Peer data the fast path had no live route for: the core checks everything."""
        forwarded = self._server.from_peer(relayed, data, peer, now)
        if forwarded is None:
            return
        five_tuple, out = forwarded
        if five_tuple[0] is _UDP:
            listener = self._listeners.get(five_tuple[2])
            if listener is not None:
                self._outbox.append((listener.sendto, out, five_tuple[1]))
        else:
            self._send_client(five_tuple, out)

    def _hairpin(self, relayed: Address, source: Address, length: int, now: float) -> None:
        """Deliver ``length`` bytes at ``self._buffer[4:]``, sent from our relayed address
        ``source`` to our relayed address ``relayed``, without the kernel round trip.

        When both peers of a call are relayed by this server, their media goes from one
        allocation's relayed socket to the other's. Through the kernel that is a
        ``sendto`` (paying the receiver's network stack) plus a wake-up and a
        ``recvfrom`` on the other socket, per packet. Here the datagram is handed
        straight to what ``_on_relay`` would do with it when it arrived from ``source``:
        the receiving allocation's peer route if live (same lookup, expiry compare and
        ``admit``), else the core's full checks (permission, channel or Data indication,
        drops counted by reason). So forwarding obeys exactly the receiving
        allocation's state, and stops the instant it is deleted (its socket leaves
        ``_relays``; then the datagram goes out through the kernel as before, to a
        closed port) or its permission or channel expires (the route is stale).
        """
        self.hairpinned += 1
        route = self._server.peer_routes(relayed).get(source)
        if route is not None and now < route.expiry:
            if route.admit(length, now):
                listener = self._listeners.get(route.server)
                if listener is not None:
                    buffer = self._buffer
                    _CHANNEL_HEADER.pack_into(buffer, 0, route.number, length)
                    self._outbox.append((listener.sendto, buffer[: 4 + length], route.client))
            return
        self._from_peer_slow(relayed, bytes(self._buffer[4 : 4 + length]), source, now)

    def _to_peer(self, relayed: Address, peer: Address, data: bytes, now: float) -> None:
        """Relay ``data`` from our relayed address ``relayed`` to ``peer`` (core paths)."""
        if peer in self._relays and len(data) <= MAX_DATAGRAM:
            self._payload_view[: len(data)] = data
            self._hairpin(peer, relayed, len(data), now)
            return
        sock = self._relays.get(relayed)
        if sock is not None:
            self._outbox.append((sock.sendto, data, peer))

    def _outbox_filled(self, outbox: list[_Datagram]) -> None:
        """Send now if the outbox is full, else once every ready socket has been read."""
        if len(outbox) >= OUTBOX_LIMIT:
            self._flush()
        elif outbox and not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send the outbox, in arrival order.

        Sends wait for the end of the event-loop iteration so that a burst of datagrams
        to one receiver wakes it once, not once per datagram (on loopback the sender
        pays the receiver's wake-up; see docs/relay.md, "Throughput")."""
        self._flush_scheduled = False
        outbox = self._outbox
        for send, data, address in outbox:
            try:
                send(data, address)
            except OSError:
                self.send_errors += 1
        outbox.clear()

    def _send_client(self, five_tuple: FiveTuple, data: bytes) -> None:
        if five_tuple.transport is Transport.UDP:
            listener = self._listeners.get(five_tuple.server)
            if listener is None:
                return
            try:
                listener.sendto(data, five_tuple.client)
            except OSError:
                self.send_errors += 1
        else:
            client = self._tcp_clients.get(five_tuple)
            if client is not None:
                client.write(data)

    def _from_client(self, five_tuple: FiveTuple, data: bytes) -> None:
        self._execute(self._server.handle_client(five_tuple, data, self._time(), wall_clock()))

    # -------------------------------------------------------------- control

    def _execute(self, outputs: list[Output]) -> None:
        """Carry out the core's commands in order; binding results feed back into the core."""
        server = self._server
        if self._outbox:
            self._flush()  # what was relayed before goes first
        for client, code in server.auth_refusals():  # the STUN path only, never ChannelData
            reason = "bad-credentials" if code == 401 else "forbidden"
            self.refusal_log.refused("turn-auth", reason, client)
        queue = list(outputs)
        index = 0
        while index < len(queue):
            output = queue[index]
            index += 1
            if isinstance(output, ToClient):
                self._send_client(output.five_tuple, output.data)
            elif isinstance(output, ToPeer):
                self._to_peer(output.relayed, output.peer, output.data, self._time())
            elif isinstance(output, OpenRelay):
                queue.extend(self._open_relay(output))
            elif isinstance(output, CloseRelay):
                sock = self._relays.pop(output.address, None)
                if sock is not None:
                    if self._loop is not None:
                        self._loop.remove_reader(sock.fileno())
                    sock.close()
        if self._outbox:
            self._flush()  # relayed datagrams (ToPeer) leave now, as they always did
        if not self._closed:
            self._rearm(server.next_deadline())

    def _open_relay(self, command: OpenRelay) -> list[Output]:
        now = self._time()
        if self._closed or self._loop is None:
            return []
        try:
            sock = _udp_socket(command.address)
        except OSError as error:
            logger.info("relayed port %s unavailable: %s", command.address, error)
            return self._server.relay_open_failed(command.five_tuple, now)
        name = sock.getsockname()
        address = (name[0], name[1])
        self._relays[address] = sock
        self._loop.add_reader(sock.fileno(), self._on_relay, sock, address)
        return self._server.relay_opened(command.five_tuple, address, now)

    def _rearm(self, deadline: float | None) -> None:
        if deadline == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        self._execute(self._server.handle_timer(self._time()))

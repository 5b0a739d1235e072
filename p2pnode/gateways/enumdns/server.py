"""Thin asyncio adapters for the ENUM DNS core: one UDP socket and one TCP listener.

UDP uses ``loop.add_reader`` on a non-blocking socket and drains a bounded batch
of datagrams per wake-up: asyncio's datagram transport polls once per datagram,
which cost more than the whole answer (the core answers a cached query in ~2 µs).

Invariants:
- Every task has an owner: ``EnumDnsServer.run`` holds a TaskGroup with the
  route workers and every deferred answer; TCP connection handlers are tracked
  and cancelled on close.
- The UDP hot path never awaits: a query whose route is unknown is parked in a
  bounded set of deferred answers, each waiting at most ``route_wait`` seconds.
- TCP (RFC 7766): two-byte length framing, bounded connections, an idle
  timeout per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from p2pnode.gateways.enumdns.core import EnumDnsCore, NeedsRoute, Transport
from p2pnode.gateways.enumdns.routes import RouteCache

__all__ = ["EnumDnsServer"]

_log = logging.getLogger(__name__)

MAX_DEFERRED = 512  # UDP queries waiting for a route at once
MAX_TCP_CONNECTIONS = 256
TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 §6.2.3: servers should close idle connections
_BIND_ATTEMPTS = 20
UDP_BATCH = 64  # datagrams handled per event-loop wake-up
UDP_MAX_QUERY = 4096  # larger queries are truncated by the kernel and fail to parse
UDP_BUFFER_BYTES = 4 * 1024 * 1024


class EnumDnsServer:
    """Serve one ``EnumDnsCore`` on UDP and TCP at the same address."""

    def __init__(
        self,
        core: EnumDnsCore,
        routes: RouteCache,
        *,
        route_wait: float = 1.5,
    ) -> None:
        if routes.positive_ttl > core.config.route_ttl:
            # issue 10 finding 5: a route cached longer than the TTL we hand out would
            # keep a revoked owner's route in our answers past that TTL
            raise ValueError(
                f"routes are cached {routes.positive_ttl:g} s, more than the answer TTL "
                f"{core.config.answer_ttl} s minus the {core.config.cache_ttl:g} s answer cache"
            )
        self.core = core
        self.routes = routes
        self.route_wait = route_wait
        self._loop = asyncio.get_running_loop()
        self._udp: socket.socket | None = None
        self._group: asyncio.TaskGroup | None = None
        self._deferred = 0
        self._tcp_tasks: set[asyncio.Task[Any]] = set()
        self.send_drops = 0
        self.address: tuple[str, int] = ("", 0)

    @contextlib.asynccontextmanager
    async def running(self, host: str, port: int) -> AsyncIterator[tuple[str, int]]:
        """Bind UDP and TCP on ``host:port`` (0: one free port for both) and serve inside."""
        tcp_server = await self._bind(host, port)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                workers = group.create_task(self.routes.run())
                try:
                    yield self.address
                finally:
                    workers.cancel()
                    self._close(tcp_server)
        finally:
            self._group = None

    async def _bind(self, host: str, port: int) -> asyncio.Server:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        last_error: OSError | None = None
        for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.setblocking(False)
                with contextlib.suppress(OSError):  # best effort: absorb bursts
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER_BYTES)
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER_BYTES)
                udp.bind((host, port))
            except OSError:
                udp.close()
                raise
            bound = udp.getsockname()
            try:
                tcp = await asyncio.start_server(
                    self._serve_tcp, host, bound[1], family=family, reuse_address=True
                )
            except OSError as error:
                udp.close()
                if error.errno != errno.EADDRINUSE:
                    raise
                last_error = error
                continue
            self._udp = udp
            self._loop.add_reader(udp.fileno(), self._on_readable)
            self.address = (bound[0], bound[1])
            return tcp
        assert last_error is not None
        raise last_error

    def _close(self, tcp_server: asyncio.Server) -> None:
        tcp_server.close()
        for task in list(self._tcp_tasks):
            task.cancel()
        if self._udp is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None

    def _on_readable(self) -> None:
        """Drain up to ``UDP_BATCH`` datagrams per wake-up: one poll, many answers."""
        sock = self._udp
        if sock is None:
            return
        now = self._loop.time()
        handle = self.core.handle
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(UDP_MAX_QUERY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. ICMP port unreachable surfacing as ECONNREFUSED
                _log.debug("UDP receive error: %s", error)
                continue
            result = handle(data, addr[0], now, Transport.UDP)
            if type(result) is bytes:
                self._send(result, addr)
            elif isinstance(result, NeedsRoute):
                self._defer(data, addr, result)

    def _send(self, data: bytes, addr: Any) -> None:
        if self._udp is None:
            return
        try:
            self._udp.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.send_drops += 1  # socket buffer full: the client retries, as after any loss
        except OSError as error:
            _log.debug("UDP send to %s failed: %s", addr, error)

    def _defer(self, data: bytes, addr: Any, result: NeedsRoute) -> None:
        if self._group is None or self._deferred >= MAX_DEFERRED:
            self._answer_final(data, addr)  # bounded: SERVFAIL now rather than hold it
            return
        self._deferred += 1
        self._group.create_task(self._deferred_answer(data, addr, result.number))

    async def _deferred_answer(self, data: bytes, addr: Any, number: str) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.route_wait):
                    await self.routes.wait(number)
            self._answer_final(data, addr)
        finally:
            self._deferred -= 1

    def _answer_final(self, data: bytes, addr: Any) -> None:
        result = self.core.handle(data, addr[0], self._loop.time(), Transport.UDP, final=True)
        if isinstance(result, bytes):
            self._send(result, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tcp_tasks) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._tcp_tasks.add(task)
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else "?"
        try:
            while True:
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        header = await reader.readexactly(2)
                        query = await reader.readexactly(int.from_bytes(header, "big"))
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                result = self.core.handle(query, client, self._loop.time(), Transport.TCP)
                if isinstance(result, NeedsRoute):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.route_wait):
                            await self.routes.wait(result.number)
                    result = self.core.handle(
                        query, client, self._loop.time(), Transport.TCP, final=True
                    )
                if not isinstance(result, bytes):
                    return  # malformed beyond answering: close (RFC 7766 §6.2.4 permits it)
                writer.write(len(result).to_bytes(2, "big") + result)
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        await writer.drain()
                except (TimeoutError, ConnectionError):
                    return
        finally:
            self._tcp_tasks.discard(task)
            writer.close()

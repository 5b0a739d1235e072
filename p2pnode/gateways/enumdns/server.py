"""Thin asyncio adapters for the ENUM DNS core: one UDP socket and one TCP listener.

UDP runs on the shared ``nat.driver.DatagramDriver`` (non-blocking socket read
with ``loop.add_reader``, a bounded batch per wake-up: asyncio's datagram
transport polls once per datagram, which cost more than the whole answer; the
core answers a cached query in ~2 µs). ``_UdpQueries`` is the small core the
driver runs: answer now, or park the query until its route arrives.

Invariants:
- Every task has an owner: ``EnumDnsServer.run`` holds a TaskGroup with the
  route workers and every deferred answer; TCP connection handlers are tracked
  and cancelled on close.
- The UDP hot path never awaits: a query whose route is unknown is parked in a
  bounded set of deferred answers, each waiting at most ``route_wait`` seconds.
- TCP (RFC 7766): two-byte length framing, bounded connections, an idle
  timeout per connection.
- A rate-limited client is logged fail2ban style (``refused what=dns-query
  reason=rate-limited source=<ip>``), at most once per client and interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from nat.driver import DatagramDriver
from nat.logsafe import RefusalLog
from p2pnode.gateways.enumdns.core import EnumDnsCore, NeedsRoute, Transport
from p2pnode.gateways.enumdns.routes import RouteCache

__all__ = ["EnumDnsServer"]

_log = logging.getLogger(__name__)

MAX_DEFERRED = 512  # UDP queries waiting for a route at once
MAX_TCP_CONNECTIONS = 256
TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 §6.2.3: servers should close idle connections
_BIND_ATTEMPTS = 20
UDP_BUFFER_BYTES = 4 * 1024 * 1024


Address = tuple[str, int]


class _Reply(NamedTuple):
    """An answer for the driver (a NamedTuple: built per query, cheaper than a dataclass)."""

    data: bytes
    remote: Address
    local: Address | None


class _UdpQueries:
    """The driver's core: the gateway core's answer now, or a deferred one (no timers)."""

    def __init__(self, server: EnumDnsServer) -> None:
        self._server = server
        self._handle = server.core.handle
        self._limited = server.core.limited_clients

    def handle_datagram(
        self, data: bytes, source: Address, local: Address, now: float
    ) -> list[_Reply]:
        result = self._handle(data, source[0], now, Transport.UDP)
        if self._limited:  # rare: only rate-limited queries fill it
            self._server.log_refusals()
        if type(result) is bytes:
            return [_Reply(result, source, local)]
        if isinstance(result, NeedsRoute):
            self._server._defer(data, source, local, result)
        return []

    def handle_timer(self, now: float) -> list[_Reply]:
        return []

    def next_deadline(self) -> float | None:
        return None


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
        self._udp: DatagramDriver | None = None
        self._group: asyncio.TaskGroup | None = None
        self._deferred = 0
        self._tcp_tasks: set[asyncio.Task[Any]] = set()
        self.address: tuple[str, int] = ("", 0)
        self.refusal_log = RefusalLog(_log, self._loop.time)

    def log_refusals(self) -> None:
        """One fail2ban-style line per rate-limited client and interval (``RefusalLog``)."""
        limited = self.core.limited_clients
        while limited:
            self.refusal_log.refused("dns-query", "rate-limited", limited.popleft())

    @property
    def send_drops(self) -> int:
        """UDP answers dropped because the send buffer was full (the client retries)."""
        return 0 if self._udp is None else self._udp.drops().get("send buffer full", 0)

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
            udp = DatagramDriver(logger=_log)
            try:
                bound = await udp.open((host, port), buffer_bytes=UDP_BUFFER_BYTES)
            except OSError:
                udp.close()
                raise
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
            udp.start(_UdpQueries(self))
            self.address = bound
            return tcp
        assert last_error is not None
        raise last_error

    def _close(self, tcp_server: asyncio.Server) -> None:
        tcp_server.close()
        for task in list(self._tcp_tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def _send(self, data: bytes, addr: Address, local: Address) -> None:
        if self._udp is not None:
            self._udp.send([_Reply(data, addr, local)])

    def _defer(self, data: bytes, addr: Address, local: Address, result: NeedsRoute) -> None:
        if self._group is None or self._deferred >= MAX_DEFERRED:
            self._answer_final(data, addr, local)  # bounded: SERVFAIL now rather than hold it
            return
        self._deferred += 1
        self._group.create_task(self._deferred_answer(data, addr, local, result.number))

    async def _deferred_answer(
        self, data: bytes, addr: Address, local: Address, number: str
    ) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.route_wait):
                    await self.routes.wait(number)
            self._answer_final(data, addr, local)
        finally:
            self._deferred -= 1

    def _answer_final(self, data: bytes, addr: Address, local: Address) -> None:
        result = self.core.handle(data, addr[0], self._loop.time(), Transport.UDP, final=True)
        if isinstance(result, bytes):
            self._send(result, addr, local)

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

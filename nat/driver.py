"""One asyncio datagram driver for every sans-IO core: sockets, ``now``, one timer.

Why one: each protocol core (STUN server, STUN client probes, and whatever else
speaks UDP) takes bytes, a source, the local address and ``now`` and returns the
datagrams to send plus its next deadline. Writing the adapter once keeps the
rules in one place: the clock is the loop's monotonic ``loop.time()``; exactly
one timer is armed, at the core's ``next_deadline()``, re-armed after every
input; a core that raises a ``ValueError`` (every ``...DecodeError`` is one) on
a datagram drops that datagram, counted by reason and logged at most once per
interval, never taking the socket down.

Sockets are non-blocking and read with ``loop.add_reader``, draining up to
``BATCH`` datagrams per wake-up (asyncio's datagram transport polls once per
datagram, which costs more than a cached DNS answer); the timer is re-armed once
per batch. A full send buffer drops the datagram (counted), as the network would.

Not everything uses it: the TURN relay's ChannelData fast path
(``relay.service``) keeps its own batched loop because that is what its
benchmark measures. A DHT node would move as ``DatagramDriver()`` +
``open(listen)`` + ``start(core)`` once its core answers ``handle_datagram`` /
``handle_timer`` / ``next_deadline`` this way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

from nat.drops import DropCounter

__all__ = ["DatagramCore", "DatagramDriver", "Outgoing"]

Address = tuple[str, int]
_logger = logging.getLogger(__name__)

BATCH = 64  # datagrams drained per wake-up
MAX_DATAGRAM = 65535


class Outgoing(Protocol):
    """A datagram a core wants sent; ``local`` None: from the driver's default socket."""

    @property
    def data(self) -> bytes: ...

    @property
    def remote(self) -> Address: ...

    @property
    def local(self) -> Address | None: ...


class DatagramCore(Protocol):
    """What a sans-IO core offers the driver (STYLE: bytes, address and ``now`` in)."""

    def handle_datagram(
        self, data: bytes, source: Address, local: Address, now: float
    ) -> Sequence[Outgoing]: ...

    def handle_timer(self, now: float) -> Sequence[Outgoing]: ...

    def next_deadline(self) -> float | None: ...


class _Socket:
    __slots__ = ("local", "receive", "sock")

    def __init__(self, sock: socket.socket, local: Address, receive: bool) -> None:
        self.sock = sock
        self.local = local
        self.receive = receive


class DatagramDriver:
    """Owns UDP sockets and one timer, and runs one ``DatagramCore`` on them.

    ``open`` binds sockets (before or after ``start``); datagrams that arrive
    before ``start(core)`` are dropped and counted, as are ones to send-only
    sockets. ``close`` closes every socket and cancels the timer.
    """

    def __init__(self, *, logger: logging.Logger | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._core: DatagramCore | None = None
        self._receiving: dict[Address, _Socket] = {}
        self._all: list[_Socket] = []
        self._default: _Socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._drops = DropCounter(logger or _logger, self._loop.time)
        self.sent = 0
        self.received = 0

    async def open(
        self,
        local: Address,
        *,
        receive: bool = True,
        default: bool = False,
        buffer_bytes: int | None = None,
    ) -> Address:
        """Bind ``local`` (port 0: any) and return the bound address.

        ``receive`` False: a send-only socket (what arrives is dropped, counted).
        ``default``: the socket that sends a core's datagrams whose ``local`` is None.
        ``buffer_bytes``: ask for larger kernel buffers to absorb bursts (best effort).
        """
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if buffer_bytes is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
                except OSError:
                    pass
            sock.bind(local)
        except OSError:
            sock.close()
            raise
        name = sock.getsockname()
        entry = _Socket(sock, (str(name[0]), int(name[1])), receive)
        self._all.append(entry)
        if receive:
            self._receiving[entry.local] = entry
        if default:
            self._default = entry
        self._loop.add_reader(sock.fileno(), self._readable, entry)
        return entry.local

    def start(self, core: DatagramCore) -> None:
        """Feed datagrams to ``core`` from now on and arm its first timer."""
        self._core = core
        self._arm()

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Bound receiving sockets, in the order they were opened."""
        return tuple(self._receiving)

    def drops(self) -> Mapping[str, int]:
        """Datagrams the driver dropped (or the core refused), by reason."""
        return self._drops.counts()

    def send(self, outgoing: Sequence[Outgoing]) -> None:
        """Send what a core returned outside ``handle_datagram``/``handle_timer``."""
        self._transmit(outgoing)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._core = None
        for entry in self._all:
            self._loop.remove_reader(entry.sock.fileno())
            entry.sock.close()
        self._all.clear()
        self._receiving.clear()
        self._default = None

    # ------------------------------------------------------------------ inner

    def _readable(self, entry: _Socket) -> None:
        """Drain up to ``BATCH`` datagrams: one poll, many inputs, one re-arm.

        The per-datagram path is kept lean (it is what ``benchmarks/enum_dns.py``
        measures): lookups hoisted out of the loop, and an answer from the socket
        the query came in on is sent without going through ``_transmit``."""
        sock = entry.sock
        local = entry.local
        core = self._core
        if core is None or not entry.receive:
            self._discard(entry, "datagram before start" if entry.receive else None)
            return
        handle = core.handle_datagram
        now = self._loop.time()
        received = sent = 0
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:  # e.g. ICMP port unreachable surfacing as ECONNREFUSED
                self._drops.drop("socket error", type(error).__name__)
                continue
            received += 1
            try:
                source = addr if len(addr) == 2 else (addr[0], addr[1])  # IPv6: 4-tuple
                outgoing = handle(data, source, local, now)
            except ValueError as error:
                self._drops.drop("core refused datagram", type(error).__name__)
                continue
            if not outgoing:
                continue
            if len(outgoing) == 1 and outgoing[0].local == local:
                item = outgoing[0]
                try:
                    sock.sendto(item.data, item.remote)
                except (BlockingIOError, InterruptedError):
                    self._drops.drop("send buffer full")  # the peer retries, as after any loss
                except OSError as error:
                    self._drops.drop("send failed", type(error).__name__)
                else:
                    sent += 1
            else:
                self._transmit(outgoing)
        self.received += received
        self.sent += sent
        self._arm()

    def _discard(self, entry: _Socket, reason: str | None) -> None:
        """Read and count what arrives where no core listens (send-only, or not started)."""
        for _ in range(BATCH):
            try:
                entry.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._drops.drop("socket error", type(error).__name__)
                continue
            self._drops.drop(reason or "datagram on a send-only socket")

    def _transmit(self, outgoing: Sequence[Outgoing]) -> None:
        for item in outgoing:
            entry = self._default if item.local is None else self._receiving.get(item.local)
            if entry is None:
                self._drops.drop("no socket for outgoing datagram")
                continue
            try:
                entry.sock.sendto(item.data, item.remote)
            except (BlockingIOError, InterruptedError):
                self._drops.drop("send buffer full")  # the peer retries, as after any loss
            except OSError as error:
                self._drops.drop("send failed", type(error).__name__)
            else:
                self.sent += 1

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        core = self._core
        if core is not None:
            self.send(core.handle_timer(self._loop.time()))

    def _arm(self) -> None:
        core = self._core
        deadline = None if core is None else core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

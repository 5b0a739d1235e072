"""One asyncio datagram driver for every sans-IO core: sockets, ``now``, one timer.

Why one: each protocol core (STUN server, STUN client probes, and whatever else
speaks UDP) takes bytes, a source, the local address and ``now`` and returns the
datagrams to send plus its next deadline. Writing the adapter once keeps the
rules in one place: the clock is the loop's monotonic ``loop.time()``; exactly
one timer is armed, at the core's ``next_deadline()``, re-armed after every
input; a core that raises a ``ValueError`` (every ``...DecodeError`` is one) on
a datagram drops that datagram, counted by reason and logged at most once per
interval, never taking the socket down.

Not everything uses it: the TURN relay's ChannelData fast path
(``relay.service``) keeps its own batched loop because that is what its
benchmark measures. A DHT node would move as ``DatagramDriver()`` +
``open(listen)`` + ``start(core)`` once its core answers ``handle_datagram`` /
``handle_timer`` / ``next_deadline`` this way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from nat.drops import DropCounter

__all__ = ["DatagramCore", "DatagramDriver", "Outgoing"]

Address = tuple[str, int]
_logger = logging.getLogger(__name__)


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


def _address(addr: Any) -> Address:
    return (str(addr[0]), int(addr[1]))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, driver: DatagramDriver, receive: bool) -> None:
        self._driver = driver
        self._receive = receive
        self.local: Address = ("", 0)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._receive:
            self._driver._datagram(data, _address(addr), self.local)
        else:
            self._driver._drops.drop("datagram on a send-only socket")

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (port unreachable): counted, nothing to undo.
        self._driver._drops.drop("socket error", type(exc).__name__)


class DatagramDriver:
    """Owns UDP sockets and one timer, and runs one ``DatagramCore`` on them.

    ``open`` binds sockets (before or after ``start``); datagrams that arrive
    before ``start(core)`` are dropped and counted, as are ones to send-only
    sockets. ``close`` closes every socket and cancels the timer.
    """

    def __init__(self, *, logger: logging.Logger | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._core: DatagramCore | None = None
        self._transports: dict[Address, asyncio.DatagramTransport] = {}
        self._send_only: list[asyncio.DatagramTransport] = []
        self._default: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._drops = DropCounter(logger or _logger, self._loop.time)
        self.sent = 0
        self.received = 0

    async def open(self, local: Address, *, receive: bool = True, default: bool = False) -> Address:
        """Bind ``local`` (port 0: any) and return the bound address.

        ``receive`` False: a send-only socket (what arrives is dropped). ``default``:
        the socket that sends a core's datagrams whose ``local`` is None.
        """
        transport, protocol = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self, receive), local_addr=local
        )
        bound = _address(transport.get_extra_info("sockname"))
        protocol.local = bound
        if receive:
            self._transports[bound] = transport
        else:
            self._send_only.append(transport)
        if default:
            self._default = transport
        return bound

    def start(self, core: DatagramCore) -> None:
        """Feed datagrams to ``core`` from now on and arm its first timer."""
        self._core = core
        self._arm()

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Bound receiving sockets, in the order they were opened."""
        return tuple(self._transports)

    def drops(self) -> Mapping[str, int]:
        """Datagrams the driver dropped (or the core refused), by reason."""
        return self._drops.counts()

    def send(self, outgoing: Sequence[Outgoing]) -> None:
        """Send what a core returned outside ``handle_datagram``/``handle_timer``."""
        for item in outgoing:
            transport = self._default if item.local is None else self._transports.get(item.local)
            if transport is None or transport.is_closing():
                self._drops.drop("no socket for outgoing datagram")
                continue
            transport.sendto(item.data, item.remote)
            self.sent += 1
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._core = None
        for transport in (*self._transports.values(), *self._send_only):
            transport.close()
        self._transports.clear()
        self._send_only.clear()

    # ------------------------------------------------------------------ inner

    def _datagram(self, data: bytes, source: Address, local: Address) -> None:
        core = self._core
        if core is None:
            self._drops.drop("datagram before start")
            return
        self.received += 1
        try:
            outgoing = core.handle_datagram(data, source, local, self._loop.time())
        except ValueError as error:
            self._drops.drop("core refused datagram", type(error).__name__)
            return
        self.send(outgoing)

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

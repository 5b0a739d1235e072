"""The asyncio adapter for the STUN server core: bind up to four sockets plus a dial-back one.

Thin on purpose: ``StunService`` picks the addresses and hands sockets, clock
and dispatch to the shared ``nat.driver.DatagramDriver``, which sends what the
core returns from the socket bound to the address it names. ``DatagramSocket``
stays for the NAT-discovery client (``nat.runner``).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from nat.driver import DatagramDriver
from nat.stun.attributes import Address
from nat.stun.server import StunServer, StunServerStats

__all__ = ["DatagramSocket", "StunService", "open_datagram_socket"]

logger = logging.getLogger(__name__)

# Binding the alternate IP on ports the primary got from the kernel can collide.
_BIND_ATTEMPTS = 8


def _address(addr: Any) -> Address:
    return (str(addr[0]), int(addr[1]))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, _address(addr))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (port unreachable): nothing to do on a server.
        logger.debug("socket error: %s", exc)


class DatagramSocket:
    """One bound UDP socket with a callback; ``send`` never blocks."""

    def __init__(self, transport: asyncio.DatagramTransport, local: Address) -> None:
        self._transport = transport
        self.local = local

    def send(self, data: bytes, remote: Address) -> None:
        if not self._transport.is_closing():
            self._transport.sendto(data, remote)

    def close(self) -> None:
        self._transport.close()


async def open_datagram_socket(
    local: Address, on_datagram: Callable[[bytes, Address], None]
) -> DatagramSocket:
    """Bind ``local`` (port 0: any); the callback gets (data, source)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Protocol(on_datagram), local_addr=local
    )
    bound = _address(transport.get_extra_info("sockname"))
    return DatagramSocket(transport, bound)


class StunService:
    """A running STUN server on real sockets; use ``async with await StunService.start(...)``.

    The sockets, the clock and the dispatch are ``nat.driver.DatagramDriver``'s;
    this class only decides which addresses to bind (RFC 5780's two IPs and two
    ports, plus a send-only dial-back socket)."""

    def __init__(self, server: StunServer, driver: DatagramDriver) -> None:
        self.server = server
        self._driver = driver

    @classmethod
    async def start(
        cls,
        listen: Address,
        *,
        alt_ip: str | None = None,
        alt_port: int | None = None,
        **server_options: Any,
    ) -> Self:
        """Bind the primary address, the alternate port and IP if given, and a dial-back socket.

        With ``alt_ip`` and no ``alt_port`` a second port is chosen too (RFC 5780
        discovery needs two IPs and two ports).
        """
        host = listen[0]
        if alt_ip is not None:
            if ipaddress.ip_address(host).is_unspecified:
                raise ValueError("an alternate IP needs a specific listen IP, not a wildcard")
            if alt_port is None:
                alt_port = 0
        last_error: OSError | None = None
        for _ in range(_BIND_ATTEMPTS):
            try:
                return await cls._bind_all(listen, alt_ip, alt_port, server_options)
            except OSError as error:
                retryable = error.errno == errno.EADDRINUSE and (listen[1] == 0 or alt_port == 0)
                if not retryable:
                    raise
                last_error = error
        assert last_error is not None
        raise last_error

    @classmethod
    async def _bind_all(
        cls,
        listen: Address,
        alt_ip: str | None,
        alt_port: int | None,
        server_options: dict[str, Any],
    ) -> Self:
        # Datagrams arriving while we still bind are dropped (and counted) by the driver.
        driver = DatagramDriver(logger=logger)
        try:
            primary = await driver.open(listen)
            ports = [primary[1]]
            if alt_port is not None:
                ports.append((await driver.open((listen[0], alt_port)))[1])
            if alt_ip is not None:
                for port in ports:
                    await driver.open((alt_ip, port))
            # Probes leave from the alternate IP when there is one: an IP the
            # requester never sent to, so only a really open port lets them in.
            probe_ip = alt_ip if alt_ip is not None else primary[0]
            await driver.open((probe_ip, 0), receive=False, default=True)
        except OSError:
            driver.close()
            raise
        server_options.setdefault("dial_back", True)  # we own a dial-back socket
        server = StunServer(
            primary,
            alt_ip=alt_ip,
            alt_port=ports[1] if len(ports) > 1 else None,
            **server_options,
        )
        if set(driver.addresses) != set(server.local_addresses):  # pragma: no cover - a bug guard
            raise AssertionError(f"bound {sorted(driver.addresses)} != {server.local_addresses}")
        driver.start(server)
        return cls(server, driver)

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self.server.local_addresses

    def statistics(self) -> StunServerStats:
        return self.server.statistics()

    def driver_drops(self) -> Mapping[str, int]:
        """Datagrams dropped before reaching the core (or refused by it), by reason."""
        return self._driver.drops()

    async def close(self) -> None:
        self._driver.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

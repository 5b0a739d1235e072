"""The ENUM DNS gateway as a service: NAPTR answers for numbers, resolved through the
node's own DHT (``[enum]``; what ``p2pnode enum serve`` runs on its own)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import dns.name

from p2pnode.app.config import NodeConfig, hostport
from p2pnode.app.services import DhtService, directory_of
from p2pnode.gateways.enumdns import DEFAULT_ZONES
from p2pnode.gateways.enumdns.config import GatewayConfig, parse_zone
from p2pnode.gateways.enumdns.core import EnumDnsCore, GatewayStatistics
from p2pnode.gateways.enumdns.routes import RouteCache
from p2pnode.gateways.enumdns.server import EnumDnsServer
from p2pnode.identity import public_key_from_peer_id

__all__ = ["EnumDnsService", "EnumServiceStatistics", "gateway_config"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(frozen=True)
class EnumServiceStatistics:
    address: Address | None
    gateway: GatewayStatistics
    send_drops: int


def gateway_config(config: NodeConfig) -> GatewayConfig:
    section = config.enum
    rate = section.rate_limit
    return GatewayConfig(
        zones=tuple(parse_zone(z) for z in section.zones) or DEFAULT_ZONES,
        ns_name=dns.name.from_text(section.ns_name),
        rate_limit=rate,
        rate_burst=max(2.0 * rate, 1.0),
        serial=int(time.time()) % 2**32,
    )


class EnumDnsService:
    """The ENUM DNS gateway: NAPTR answers for numbers, resolved through the node's DHT."""

    name = "enum"

    def __init__(self, dht: DhtService, config: NodeConfig) -> None:
        self.listen = hostport(config.enum.listen)
        self.gateway = gateway_config(config)
        trusted = frozenset(public_key_from_peer_id(p) for p in config.enum.trust)
        self.directory = directory_of(dht, trusted)
        self.server: EnumDnsServer | None = None
        self.address: Address | None = None
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[Address] | None = None
        self._task: asyncio.Task[None] | None = None
        self._core: EnumDnsCore | None = None

    async def start(self) -> None:
        """Bind now (so a busy port fails the start), serve in ``run``."""
        loop = asyncio.get_running_loop()
        routes = RouteCache(self.directory.route, loop.time)
        self._core = EnumDnsCore(self.gateway, routes.route_nowait, clock=loop.time)
        self.server = EnumDnsServer(self._core, routes)
        self._stop = asyncio.Event()
        self._ready = loop.create_future()
        self._task = asyncio.create_task(self._serve(self.server, self._ready))
        try:
            self.address = await self._ready
        except BaseException:
            await self.stop()
            raise

    async def _serve(self, server: EnumDnsServer, ready: asyncio.Future[Address]) -> None:
        try:
            async with server.running(*self.listen) as bound:
                ready.set_result(bound)
                await self._stop.wait()
        except Exception as error:
            if not ready.done():
                ready.set_exception(error)
            else:
                raise

    async def run(self) -> None:
        assert self._task is not None
        await asyncio.shield(self._task)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await task
            except Exception as error:
                logger.warning("enum gateway ended with %s", error)

    def statistics(self) -> EnumServiceStatistics:
        if self._core is None or self.server is None:
            empty = GatewayStatistics(0, 0, 0, 0, 0, 0, 0)
            return EnumServiceStatistics(None, empty, 0)
        return EnumServiceStatistics(self.address, self._core.statistics(), self.server.send_drops)

"""ENUM over DNS: answer NAPTR queries for numbers from the DHT directory.

config (zones, limits) -> routes (background DHT refresh) -> core (sans-IO
query -> response, encoded-answer cache) -> server (asyncio UDP and TCP).
"""

from p2pnode.gateways.enumdns.config import DEFAULT_ZONES, GatewayConfig
from p2pnode.gateways.enumdns.core import Answer, EnumDnsCore, GatewayStatistics, NeedsRoute
from p2pnode.gateways.enumdns.routes import RouteCache, RouteStatus
from p2pnode.gateways.enumdns.server import EnumDnsServer

__all__ = [
    "DEFAULT_ZONES",
    "Answer",
    "EnumDnsCore",
    "EnumDnsServer",
    "GatewayConfig",
    "GatewayStatistics",
    "NeedsRoute",
    "RouteCache",
    "RouteStatus",
]

"""The ENUM DNS gateway's fail2ban-style refusal log, on loopback UDP.

Proves: two clients (127.0.0.2 and 127.0.0.3) flooding past the per-client
rate limit get exactly one ``refused what=dns-query reason=rate-limited`` line
each in the interval, not one per refused query, and a client within its
budget (127.0.0.4) gets none.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time

import dns.message
import pytest

from p2pnode.directory.trust import Route
from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig, RouteCache

FLOOD = 20  # queries per flooding client
BURST = 3
WAIT = 10.0  # a bound on waiting, not a speed assertion
LINE = re.compile(r"^refused what=(\S+) reason=(\S+) source=(\S+) count=(\d+)$")


async def _nobody(number: str) -> Route | None:
    return None


def test_one_line_per_rate_limited_client(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_scenario(caplog))


async def _scenario(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="p2pnode.gateways.enumdns.server")
    routes = RouteCache(_nobody, time.monotonic)
    # a refill too slow to matter within the test: BURST queries, then refusals
    config = GatewayConfig(rate_limit=0.001, rate_burst=float(BURST), slip=0)
    core = EnumDnsCore(config, routes.route_nowait)
    server = EnumDnsServer(core, routes)
    query = dns.message.make_query("9.1.0.0.6.4.9.7.0.2.4.4.e164.arpa.", "NAPTR").to_wire()
    sockets: list[socket.socket] = []
    async with server.running("127.0.0.1", 0) as address:
        try:
            for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((host, 0))
                sockets.append(sock)
            for sock in sockets[:2]:
                for _ in range(FLOOD):
                    sock.sendto(query, address)
            for _ in range(BURST):
                sockets[2].sendto(query, address)
            limited = 2 * (FLOOD - BURST)
            deadline = time.monotonic() + WAIT
            while core.statistics().rate_limited < limited:
                assert time.monotonic() < deadline, "the gateway never refused the flood"
                await asyncio.sleep(0.02)
        finally:
            for sock in sockets:
                sock.close()
    lines = [
        match.groups()
        for record in caplog.records
        if (match := LINE.match(record.getMessage())) is not None
    ]
    assert sorted(lines) == [
        ("dns-query", "rate-limited", "127.0.0.2", "1"),
        ("dns-query", "rate-limited", "127.0.0.3", "1"),
    ]
    assert server.refusal_log.total == limited

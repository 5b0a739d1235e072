"""The gateway's asyncio adapters on loopback, asked by dnspython and by dig (UDP, TCP, TC)."""

from __future__ import annotations

import asyncio
import time

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest

from p2pnode.directory.naptr import NaptrDirective, sip_directive
from p2pnode.directory.trust import Route
from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig, RouteCache
from tests.harness.tools import require_tool

NUMBER = "+18009359935"
BIG = "+442079460018"
SLOW = "+12125550100"


async def lookup(number: str) -> Route | None:
    """An injected resolver (the DHT-backed one is exercised in test_directory_dht.py)."""
    if number == SLOW:
        await asyncio.sleep(0.3)
    if number in (NUMBER, SLOW):
        return Route(number, (sip_directive("sip:pbx@owner.example"),), "verified")
    if number == BIG:
        rules = tuple(
            NaptrDirective(100, p, "u", "E2U+sip", f"!^.*$!sip:r{p}@a-long-host-name.example!")
            for p in range(8)
        )
        return Route(number, rules, "verified")
    return None


async def dig(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        require_tool("dig", "dnsutils"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(10):
        out, _ = await process.communicate()
    return out.decode()


@pytest.mark.interop
def test_dig_over_udp_and_tcp() -> None:
    asyncio.run(_dig_over_udp_and_tcp())


async def _dig_over_udp_and_tcp() -> None:
    routes = RouteCache(lookup, time.monotonic)
    core = EnumDnsCore(GatewayConfig(rate_limit=0), routes.route_nowait)
    server = EnumDnsServer(core, routes)
    async with server.running("127.0.0.1", 0) as (host, port):
        common = ["@" + host, "-p", str(port), "+tries=1", "+time=3", "-t", "NAPTR"]
        line = '100 10 "u" "E2U+sip" "!^.*$!sip:pbx@owner.example!" .'
        # first query waits (bounded) for the route, then answers
        assert (await dig(*common, "+short", "53995390081.enum")).strip() == line
        assert (
            await dig(*common, "+short", "+tcp", "5.3.9.9.5.3.9.0.0.8.1.e164.arpa")
        ).strip() == line
        # a slow lookup is still answered within the bounded wait
        assert (await dig(*common, "+short", "0.0.1.0.5.5.5.2.1.2.1.e164.arpa")).strip() == line
        unknown = await dig(*common, "9.1.0.0.6.4.9.7.0.2.4.4.e164.arpa")
        assert "status: NXDOMAIN" in unknown and "SOA" in unknown
        # 8 NAPTRs are too big for a UDP answer to this query: dig sees TC and retries over TCP
        big = await dig(*common, "+noedns", "8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa")
        assert "Truncated, retrying in TCP mode" in big
        assert big.count("NAPTR\t100 ") == 8
        big_udp = await dig(*common, "+noedns", "+ignore", "8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa")
        assert " tc" in big_udp.split("flags:")[1].split(";")[0] and "NAPTR\t100" not in big_udp


def test_dnspython_udp_tcp_and_cache_hits() -> None:
    asyncio.run(_dnspython_udp_tcp_and_cache_hits())


async def _dnspython_udp_tcp_and_cache_hits() -> None:
    routes = RouteCache(lookup, time.monotonic)
    core = EnumDnsCore(GatewayConfig(rate_limit=0), routes.route_nowait)
    server = EnumDnsServer(core, routes)
    async with server.running("127.0.0.1", 0) as (host, port):
        query = dns.message.make_query("53995390081.enum.", "NAPTR", use_edns=False)
        for _ in range(5):
            response = await dns.asyncquery.udp(query, host, port=port, timeout=3)
            assert response.answer
        assert core.statistics().cache_hits >= 3
        response = await dns.asyncquery.tcp(query, host, port=port, timeout=3)
        assert response.answer and not response.flags & dns.flags.TC
        bad = dns.message.make_query("x.enum.", "NAPTR")
        response = await dns.asyncquery.tcp(bad, host, port=port, timeout=3)
        assert response.rcode() == dns.rcode.NXDOMAIN

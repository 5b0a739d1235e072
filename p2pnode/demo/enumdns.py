"""The demo's DNS step: the ENUM gateway answers NAPTR queries from the DHT, as a PBX asks.

The gateway is built the way `p2pnode enum serve` builds it: a client-mode DHT
node joined through a bootstrap address, a ``Directory`` trusting the given
verifiers, ``RouteCache`` -> ``EnumDnsCore`` -> ``EnumDnsServer``, here bound
to 127.0.0.1 on an ephemeral port. It is asked with dnspython, a real DNS
client on real sockets: over UDP, then the same question over TCP, then a
number nobody routes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import dns.asyncquery
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rdtypes.IN.NAPTR
import dns.rrset

from p2pnode.dht import Address, DhtNode
from p2pnode.directory.e164 import enum_labels
from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig, RouteCache
from p2pnode.identity import Identity

__all__ = ["DnsExchange", "DnsOutcome", "enum_name", "query_gateway"]

QUERY_TIMEOUT = 5.0  # per DNS query; the gateway itself waits at most 1.5 s for a route
E164_ZONE = dns.name.from_text("e164.arpa.")


@dataclass(frozen=True)
class DnsExchange:
    """One NAPTR question and the answer the gateway gave."""

    transport: str  # "udp" or "tcp"
    name: dns.name.Name
    rcode: dns.rcode.Rcode
    answer: tuple[dns.rrset.RRset, ...]
    authority: tuple[dns.rrset.RRset, ...]

    def lines(self) -> list[str]:
        """The answer section as dig prints it (owner, TTL, class, type, data)."""
        return [line for rrset in self.answer for line in rrset.to_text().splitlines()]

    def naptrs(self) -> list[dns.rdtypes.IN.NAPTR.NAPTR]:
        return [
            rdata
            for rrset in self.answer
            if rrset.rdtype == dns.rdatatype.NAPTR
            for rdata in rrset
            if isinstance(rdata, dns.rdtypes.IN.NAPTR.NAPTR)
        ]

    def routes_only_to(self, uri: str) -> bool:
        """NOERROR and exactly one terminal ``u`` ``E2U+sip`` rule mapping any number to ``uri``."""
        expected = sip_directive(uri).regexp.encode()
        rules = self.naptrs()
        return (
            self.rcode == dns.rcode.NOERROR
            and len(rules) == 1
            and rules[0].flags == b"u"
            and rules[0].service == b"E2U+sip"
            and rules[0].regexp == expected
            and rules[0].replacement == dns.name.root
        )

    @property
    def nxdomain_with_soa(self) -> bool:
        """RFC 2308: a negative answer carries the zone's SOA, so resolvers can cache it."""
        has_soa = any(r.rdtype == dns.rdatatype.SOA for r in self.authority)
        return self.rcode == dns.rcode.NXDOMAIN and not self.answer and has_soa


@dataclass(frozen=True)
class DnsOutcome:
    address: Address
    number: str
    uri: str
    udp: DnsExchange
    tcp: DnsExchange
    unknown: DnsExchange

    @property
    def passed(self) -> bool:
        return (
            self.udp.routes_only_to(self.uri)
            and self.tcp.routes_only_to(self.uri)
            and self.tcp.lines() == self.udp.lines()
            and self.unknown.nxdomain_with_soa
        )


def enum_name(number: str) -> dns.name.Name:
    """RFC 6116 §2.4: the number's digits reversed, one label each, under e164.arpa."""
    return dns.name.Name(enum_labels(number)).concatenate(E164_ZONE)


async def _ask(host: str, port: int, name: dns.name.Name, transport: str) -> DnsExchange:
    query = dns.message.make_query(name, dns.rdatatype.NAPTR)
    if transport == "tcp":
        response = await dns.asyncquery.tcp(query, host, timeout=QUERY_TIMEOUT, port=port)
    else:
        response = await dns.asyncquery.udp(query, host, timeout=QUERY_TIMEOUT, port=port)
    return DnsExchange(
        transport,
        name,
        response.rcode(),
        tuple(response.answer),
        tuple(response.authority),
    )


async def query_gateway(
    bootstrap: Address, trusted: frozenset[bytes], *, number: str, unknown: str, uri: str
) -> DnsOutcome:
    """Run the gateway over the DHT reached through ``bootstrap``, ask it, stop it.

    ``uri`` is what the number should route to (checked by ``DnsOutcome.passed``).
    Raises ``dns.exception.Timeout`` if the gateway does not answer.
    """
    node = DhtNode(
        Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[bootstrap], client_mode=True
    )
    async with node:
        directory = Directory(DhtNetwork(node), trusted=trusted, clock=time.time)
        loop = asyncio.get_running_loop()
        routes = RouteCache(directory.route, loop.time)
        config = GatewayConfig(serial=int(time.time()) % 2**32)
        core = EnumDnsCore(config, routes.route_nowait, clock=loop.time)
        server = EnumDnsServer(core, routes)
        async with server.running("127.0.0.1", 0) as (host, port):
            udp = await _ask(host, port, enum_name(number), "udp")
            tcp = await _ask(host, port, enum_name(number), "tcp")
            missing = await _ask(host, port, enum_name(unknown), "udp")
    return DnsOutcome((host, port), number, uri, udp, tcp, missing)

"""Locating a foreign SIP server (RFC 3263) for calls from our accounts to other domains.

RFC 3263 §4: a numeric host is used as is (port from the URI, else 5060/5061);
a name with a port is looked up with A/AAAA only; otherwise NAPTR picks the
transport (we place calls over UDP, so only ``SIP+D2U`` is followed), its
replacement is looked up with SRV, else ``_sip._udp.<name>`` SRV directly,
and without SRV records A/AAAA of the name on the default port. SRV targets
are tried in RFC 2782 order: lowest priority first, weighted random within a
priority.

:func:`order_srv` and :func:`literal_hop` are pure; :func:`locate` is the
asyncio adapter over dnspython's resolver (bounded: at most ``MAX_HOPS``
addresses, each query with the resolver's own timeout).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception

from p2pnode.gateways.sip.headers import SipUri

__all__ = ["MAX_HOPS", "Hop", "SrvRecord", "literal_hop", "locate", "order_srv"]

MAX_HOPS = 8
_DNS_ERRORS = (dns.exception.DNSException, OSError)


@dataclass(frozen=True, slots=True)
class Hop:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


def _default_port(uri: SipUri) -> int:
    return 5061 if uri.scheme == "sips" else 5060


def literal_hop(uri: SipUri) -> Hop | None:
    """The hop of a URI whose host is an IP address (RFC 3263 §4.2), else None."""
    host = uri.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return Hop(host, uri.port or _default_port(uri))


def order_srv(records: Sequence[SrvRecord], random: Callable[[], float]) -> list[SrvRecord]:
    """RFC 2782: ascending priority; within one, weighted random selection without replacement."""
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        pool = [r for r in records if r.priority == priority]
        while pool:
            total = sum(r.weight for r in pool)
            if total == 0:
                ordered += pool
                break
            point = random() * total
            running = 0
            for index, record in enumerate(pool):
                running += record.weight
                if running >= point and record.weight > 0:
                    ordered.append(pool.pop(index))
                    break
            else:
                ordered.append(pool.pop())
    return ordered


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype)
        except _DNS_ERRORS:
            continue
        found += [record.to_text() for record in answer]
    return found


async def locate(
    uri: SipUri,
    *,
    random: Callable[[], float],
    resolver: dns.asyncresolver.Resolver | None = None,
) -> list[Hop]:
    """Where to send a request for ``uri`` (UDP), in the order to try; [] when nothing."""
    literal = literal_hop(uri)
    if literal is not None:
        return [literal]
    resolver = resolver or dns.asyncresolver.Resolver()
    name = uri.host.rstrip(".")
    if uri.port is not None:
        return [Hop(a, uri.port) for a in await _addresses(resolver, name)][:MAX_HOPS]
    srv_name = f"_sip._udp.{name}"
    try:
        naptr = await resolver.resolve(name, "NAPTR")
        udp = sorted(
            (r for r in naptr if r.service.decode(errors="replace").upper() == "SIP+D2U"),
            key=lambda r: (r.order, r.preference),
        )
        if udp:
            srv_name = udp[0].replacement.to_text().rstrip(".")
    except _DNS_ERRORS:
        pass
    hops: list[Hop] = []
    try:
        answer = await resolver.resolve(srv_name, "SRV")
        records = [
            SrvRecord(r.priority, r.weight, r.port, r.target.to_text().rstrip(".")) for r in answer
        ]
        for record in order_srv(records, random):
            hops += [Hop(a, record.port) for a in await _addresses(resolver, record.target)]
            if len(hops) >= MAX_HOPS:
                break
    except _DNS_ERRORS:
        hops = [Hop(a, _default_port(uri)) for a in await _addresses(resolver, name)]
    return hops[:MAX_HOPS]

"""Settings of the ENUM DNS gateway: zones it is authoritative for, TTLs and abuse limits."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.name

__all__ = ["DEFAULT_ZONES", "GatewayConfig", "parse_zone"]

DEFAULT_ZONES: tuple[dns.name.Name, ...] = (
    dns.name.from_text("e164.arpa."),
    dns.name.from_text("enum."),
)


def parse_zone(text: str) -> dns.name.Name:
    """A zone origin from user text (``enum``, ``e164.arpa.``); ``ValueError`` if malformed."""
    try:
        name = dns.name.from_text(text.strip() or ".")
    except dns.name.NameTooLong as error:
        raise ValueError(f"zone {text!r}: {error}") from None
    except dns.exception.DNSException as error:
        raise ValueError(f"zone {text!r} is not a domain name: {error}") from None
    if name == dns.name.root:
        raise ValueError("the gateway will not serve the root zone")
    return name


@dataclass(frozen=True)
class GatewayConfig:
    """Zones and limits. Every zone accepts dotted (RFC 6116) and undotted (ENUMER) names."""

    zones: tuple[dns.name.Name, ...] = DEFAULT_ZONES
    ns_name: dns.name.Name = field(default_factory=lambda: dns.name.from_text("localhost."))
    hostmaster: dns.name.Name = field(
        default_factory=lambda: dns.name.from_text("hostmaster.invalid.")
    )
    serial: int = 1
    answer_ttl: int = 60  # NAPTR TTL handed to PBXs and forwarders
    negative_ttl: int = 30  # SOA MINIMUM: how long NXDOMAIN/NODATA is cached (RFC 2308 §5)
    cache_ttl: float = 2.0  # how long an encoded answer is reused before it is rebuilt
    max_cached_answers: int = 65536
    rate_limit: float = 100.0  # UDP responses per second per client address; 0 disables
    rate_burst: float = 200.0
    slip: int = 2  # every n-th rate-limited query gets a tiny TC answer (to retry over TCP)
    max_clients: int = 65536  # rate-limit buckets held
    amplification_factor: int = 10  # UDP answer <= this many times the query's size
    max_udp_payload: int = 1232  # our EDNS payload size (DNS flag day 2020)

    @property
    def route_ttl(self) -> float:
        """The longest a route may be served from the route cache: with the encoded-answer
        cache on top, a revoked or changed route leaves our answers within ``answer_ttl``."""
        return self.answer_ttl - self.cache_ttl

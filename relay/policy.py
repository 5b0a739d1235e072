"""Which peer addresses a relay may send to: deny internal ranges unless the operator allows them.

An open relay into the operator's own network is the classic TURN hole (coturn
CVE-2020-26262: relaying to 0.0.0.0 / loopback reached the server's own
services). By default every address that is not globally routable is refused
with 403; ``allow`` CIDRs (e.g. ``127.0.0.0/8`` in tests, a lab's private LAN)
override the deny list, and ``deny`` CIDRs add to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["DENIED_NETWORKS", "PeerAddressPolicy", "parse_networks"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DENIED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(text)
    for text in (
        "0.0.0.0/8",  # "this network", unspecified (RFC 1122)
        "10.0.0.0/8",  # private (RFC 1918)
        "100.64.0.0/10",  # CGNAT shared space (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3 (the netns lab's "public" segment: allow it there)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::ffff:0:0/96",  # IPv4-mapped: would bypass the IPv4 rules
        "64:ff9b::/96",  # NAT64: same
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings to networks; ``ValueError`` names the bad one."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


@dataclass(frozen=True)
class PeerAddressPolicy:
    """Allow-list beats deny-list; everything else is allowed (it is a public address)."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = field(default=DENIED_NETWORKS)

    def permits(self, ip: str) -> bool:
        """True if the relay may send to (and receive from) ``ip``."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if any(address in network for network in self.allow):
            return True
        return not any(address in network for network in self.deny)

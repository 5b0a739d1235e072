"""nftables rule sets that turn a router namespace into each kind of NAT.

Why nftables and not a user-space NAT: the kernel's conntrack is what real home
routers run, so the lab tests our code against the real thing. The recipes are
the measured ones in /work/shared/LAB-NOTES.md (RFC 4787 vocabulary):

- FULL_CONE: endpoint-independent mapping and filtering
  (masquerade + a DNAT map learned from outgoing packets);
- ADDRESS_RESTRICTED: endpoint-independent mapping, address-dependent filtering
  (the same map keyed by peer IP . WAN port);
- PORT_RESTRICTED: endpoint-independent mapping, address-and-port-dependent
  filtering (plain masquerade);
- SYMMETRIC: address-and-port-dependent mapping and filtering
  (masquerade fully-random);
- UDP_BLOCKED: TCP as port-restricted, every forwarded UDP packet dropped.

Invariant: the router's WAN interface is ``wan``, its LAN interface ``lan``.
Linux masquerade keeps the source port when the tuple is free, which is what
gives the cone types their endpoint-independent mapping (one host per LAN, so
there is no clash). Hairpinning is not built.
"""

from __future__ import annotations

import enum

__all__ = ["NatType", "loss_ruleset", "router_ruleset"]


class NatType(enum.Enum):
    """The behaviour a lab router is built with (``NONE``: no router, a public host)."""

    NONE = "none"
    FULL_CONE = "full-cone"
    ADDRESS_RESTRICTED = "address-restricted"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"
    UDP_BLOCKED = "udp-blocked"


# Shared by every router: only replies and (for the cone types) learned DNAT
# come in from the WAN; the router itself answers nothing unsolicited from it.
_FILTER = """
table inet lab_filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        %(udp_block)s
        ct state established,related accept
        iifname "lan" oifname "wan" accept
        ct status dnat accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" icmp type echo-request accept
        iifname "wan" drop
    }
}
"""

_MASQUERADE = """
table ip lab_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname "wan" masquerade%(masq_flags)s
    }
}
"""

# Cone NATs with endpoint-independent or address-dependent filtering: a dynamic
# map learns, from every outgoing UDP packet after masquerade (priority
# srcnat + 10, a filter chain so every packet refreshes the timeout), which LAN
# endpoint owns a WAN port; unsolicited packets to that port are DNATed to it.
_CONE = """
table ip lab_cone {
    map binding {
        type %(key_type)s : ipv4_addr . inet_service
        flags dynamic, timeout
        timeout %(lifetime)ds
    }
    chain learn {
        type filter hook postrouting priority srcnat + 10; policy accept;
        oifname "wan" meta l4proto udp update @binding \\
            { %(learn_key)s timeout %(lifetime)ds : ct original ip saddr . ct original proto-src }
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" meta l4proto udp dnat ip to %(lookup_key)s map @binding
    }
}
"""


def router_ruleset(nat: NatType, lifetime: int) -> str:
    """The ``nft -f`` text for a router of type ``nat``; map entries live ``lifetime`` s."""
    if nat is NatType.NONE:
        raise ValueError("NatType.NONE has no router")
    udp_block = 'meta l4proto udp counter drop comment "UDP_BLOCKED"'
    text = _FILTER % {"udp_block": udp_block if nat is NatType.UDP_BLOCKED else ""}
    flags = " fully-random" if nat is NatType.SYMMETRIC else ""
    text += _MASQUERADE % {"masq_flags": flags}
    if nat is NatType.FULL_CONE:
        text += _CONE % {
            "key_type": "inet_service",
            "learn_key": "udp sport",
            "lookup_key": "udp dport",
            "lifetime": lifetime,
        }
    elif nat is NatType.ADDRESS_RESTRICTED:
        text += _CONE % {
            "key_type": "ipv4_addr . inet_service",
            "learn_key": "ip daddr . udp sport",
            "lookup_key": "ip saddr . udp dport",
            "lifetime": lifetime,
        }
    return text


def loss_ruleset(device: str, percent: float) -> str:
    """Ingress loss on ``device`` (netdev hook: before conntrack, like a lossy wire).

    Idempotent: the table is created, deleted and re-created, so setting a new
    percentage replaces the old one; 0 leaves no table at all.

    Only IP packets are dropped, never ARP: a dropped ARP request stalls
    neighbour resolution for a second while the kernel keeps only ~100 queued
    datagrams, which turned 40 % loss into 75-80 % for a burst (seen in CI).
    """
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"loss {percent} is not a percentage")
    table = f"lab_loss_{device}"
    text = f"table netdev {table} {{}}\ndelete table netdev {table}\n"
    threshold = round(percent * 100)
    # numgen gives 0..9999: "< 10000" is out of its range, so 100 % is a plain drop.
    match = "meta protocol { ip, ip6 } "
    if threshold < 10000:
        match += f"numgen random mod 10000 < {threshold} "
    if threshold > 0:
        text += (
            f"table netdev {table} {{\n"
            f"    chain ingress {{\n"
            f'        type filter hook ingress device "{device}" priority 0; policy accept;\n'
            f"        {match}counter drop\n"
            f"    }}\n"
            f"}}\n"
        )
    return text

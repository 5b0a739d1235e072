"""Validated text types shared by the config sections (config.py, peer_config.py,
sip_config.py): an IP, an IP:port, a network, a peer id.

Its own module because config.py imports the section modules, so they cannot
import it back. Messages never quote the value (the config's error report
prints the key's path beside them).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator

from p2pnode.identity import public_key_from_peer_id

__all__ = [
    "IpHostPort",
    "IpText",
    "PeerIdText",
    "check_ip",
    "check_ip_hostport",
    "check_network",
    "check_peer_id",
]


def check_ip(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("not an IP address") from None
    return text


def check_ip_hostport(text: str) -> str:
    """HOST:PORT whose host is an IP (``[v6]:port`` too)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not HOST:PORT")
    check_ip(host.strip("[]"))
    return text


def check_network(text: str, message: str = "not an IP address or network") -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(message) from None
    return text


def check_peer_id(text: str) -> str:
    try:
        public_key_from_peer_id(text)
    except ValueError:
        raise ValueError("not a peer id (52 characters)") from None
    return text


IpText = Annotated[str, AfterValidator(check_ip)]
IpHostPort = Annotated[str, AfterValidator(check_ip_hostport)]
PeerIdText = Annotated[str, AfterValidator(check_peer_id)]

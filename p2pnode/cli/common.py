"""Helpers shared by the command modules: errors for people, address parsing, home option."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

__all__ = [
    "EXIT_NEGATIVE",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "NegativeAnswerError",
    "NetworkFailureError",
    "add_home_argument",
    "parse_hostport",
]

EXIT_OK = 0
EXIT_NEGATIVE = 1  # a negative answer: not found, refused
EXIT_USAGE = 2  # a usage error (argparse's own code too)
EXIT_NETWORK = 3  # the network (or the running node) failed


class CliError(Exception):
    """An error the user can act on; printed as one line, exit status 2."""


class NegativeAnswerError(CliError):
    """A negative answer (not found, ambiguous, refused, nothing stored): one line on
    stderr, exit status 1 (a usage error is 2, a network failure 3)."""


class NetworkFailureError(CliError):
    """The network or the running node failed; printed as one line, exit status 3."""


def parse_hostport(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` into (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise CliError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise CliError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise CliError(f"{text!r}: port {port} is out of range 0-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise CliError(f"{text!r}: {host!r} is not an IP address") from None
        host = "127.0.0.1"
    return host, port


def add_home_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ["P2PNODE_HOME"]) if os.environ.get("P2PNODE_HOME") else None,
        help="node home directory (default: $P2PNODE_HOME, else the user's data dir)",
    )

"""`p2pnode enum serve`: the ENUM DNS gateway on its own.

It joins the DHT as a client and serves NAPTR answers until SIGINT/SIGTERM;
`p2pnode run` hosts the same gateway as a service ([enum]). The old top-level
name `enum-dns` is gone (issue 9: no users depended on it).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

import dns.exception
import dns.name

from p2pnode.cli.common import CliError, parse_hostport
from p2pnode.cli.directory_common import (
    _add_network_arguments,
    _rate,
    _with_directory,
)
from p2pnode.directory.lookup import Directory
from p2pnode.directory.settings import DirectorySettings
from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig, RouteCache
from p2pnode.gateways.enumdns.config import DEFAULT_ZONES, parse_zone

__all__ = ["add_serve_parsers"]


# ------------------------------------------------------------------ enum serve


def _enum_serve(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.listen, default_host="0.0.0.0")
    try:
        zones = tuple(parse_zone(z) for z in args.zone) if args.zone else None
    except ValueError as error:
        raise CliError(f"--zone: {error}") from None
    try:
        ns_name = dns.name.from_text(args.ns_name)
    except dns.exception.DNSException as error:
        raise CliError(f"--ns-name {args.ns_name!r} is not a domain name: {error}") from None
    rate = _rate("--rate-limit", args.rate_limit)
    config = GatewayConfig(
        zones=zones or DEFAULT_ZONES,
        ns_name=ns_name,
        rate_limit=rate,
        rate_burst=max(2.0 * rate, 1.0),  # two seconds' worth, whatever the rate
        serial=int(time.time()) % 2**32,
    )

    async def work(directory: Directory, _: DirectorySettings) -> int:
        loop = asyncio.get_running_loop()
        routes = RouteCache(directory.route, loop.time)
        core = EnumDnsCore(config, routes.route_nowait, clock=loop.time)
        server = EnumDnsServer(core, routes)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            async with server.running(host, port) as (bound_host, bound_port):
                names = ", ".join(z.to_text() for z in config.zones)
                print(
                    f"p2pnode enum serve: serving {names} on udp+tcp {bound_host}:{bound_port}; "
                    f"{len(directory.trusted)} trusted verifier(s); "
                    f"{len(directory.tollfree.directives)} toll-free rule(s)",
                    flush=True,
                )
                await stop.wait()
        except OSError as error:
            raise CliError(f"cannot listen on {host}:{port}: {error}") from None
        return 0

    return _with_directory(args, work)


def add_serve_parsers(enum_sub: argparse._SubParsersAction[Any]) -> None:
    """``enum serve``, under the ``enum`` command's subparsers."""
    serve_description = (
        "A DNS server (UDP and TCP) for PBXs: NAPTR answers for numbers with a "
        "record countersigned by a --trust'ed verifier, else the toll-free table, else NXDOMAIN. "
        "`p2pnode run` hosts the same gateway as a service ([enum] in its config)."
    )
    gateway = enum_sub.add_parser(
        "serve",
        help="serve ENUM NAPTR answers over DNS from the DHT",
        description=serve_description,
    )
    gateway.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="address for UDP and TCP, e.g. 127.0.0.1:5353 or 0.0.0.0:53",
    )
    gateway.add_argument(
        "--zone",
        action="append",
        metavar="ZONE",
        help="zone to serve (repeatable; default e164.arpa. and enum.)",
    )
    gateway.add_argument(
        "--tollfree-file",
        metavar="FILE",
        help="ENUMER-style rules answered when no trusted record exists",
    )
    gateway.add_argument("--ns-name", default="localhost.", help="NS/SOA name of this server")
    gateway.add_argument(
        "--rate-limit",
        default="100",
        metavar="QPS",
        help="UDP answers per second per client address, bursts of two seconds' worth "
        "(0: off; default 100)",
    )
    _add_network_arguments(gateway)
    gateway.set_defaults(func=_enum_serve)

"""`p2pnode relay`: a standalone STUN + TURN server, used the way coturn's turnserver is.

Serves STUN Binding and TURN (RFC 8656) on one port over UDP and TCP (and TLS
on another port with ``--tls-listen``) until SIGINT or SIGTERM, with operator
users (long-term credentials) and optionally a TURN REST API secret (coturn
``--use-auth-secret`` compatible).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from nat.stun.server import StunServer
from p2pnode.cli.common import CliError, parse_hostport
from relay.auth import CredentialLookup, first_match, rest_api_credentials, static_users
from relay.policy import PeerAddressPolicy, parse_networks
from relay.quota import QuotaConfig
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService
from relay.tls import TlsConfigError, server_context

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``p2pnode relay``."""
    parser = subparsers.add_parser(
        "relay",
        help="run a standalone STUN + TURN relay server",
        description=(
            "Serve STUN and TURN (RFC 8656, relayed transport UDP; clients over UDP and TCP) "
            "on HOST:PORT until SIGINT/SIGTERM. Peer addresses in private, loopback, "
            "link-local, multicast and reserved ranges are refused unless --allow-peer "
            "allows them."
        ),
    )
    parser.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="address for UDP and TCP (port 0: any)"
    )
    parser.add_argument(
        "--alt-ip",
        metavar="IP",
        help="second local IP for RFC 5780 NAT behaviour discovery (needs a fixed port; "
        "STUN is then also served on PORT+1 and on the alternate IP)",
    )
    parser.add_argument("--realm", required=True, help="authentication realm")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="a long-term credential user (repeatable)",
    )
    parser.add_argument(
        "--secret", help="TURN REST API shared secret (username 'expiry:id', HMAC-SHA1 password)"
    )
    parser.add_argument(
        "--allow-peer",
        action="append",
        default=[],
        metavar="CIDR",
        help="let clients relay to this otherwise denied range (repeatable), e.g. 127.0.0.0/8",
    )
    parser.add_argument(
        "--max-allocations", type=int, default=1000, help="total allocations (default 1000)"
    )
    parser.add_argument(
        "--max-per-user", type=int, default=10, help="allocations per user (default 10)"
    )
    parser.add_argument(
        "--max-per-ip", type=int, default=20, help="allocations per client IP (default 20)"
    )
    parser.add_argument(
        "--bandwidth-kbps",
        type=int,
        default=2500,
        help="per-allocation cap in kbit/s, each direction (default 2500: audio+video call)",
    )
    parser.add_argument(
        "--relay-ip", help="address of relayed sockets (default: the --listen host)"
    )
    parser.add_argument(
        "--ports",
        default="49152-65535",
        metavar="LOW-HIGH",
        help="relayed port range (default 49152-65535)",
    )
    parser.add_argument(
        "--rfc5766-channels",
        action="store_true",
        help="also accept channel numbers 0x5000-0x7FFF (RFC 5766; coturn's clients use them)",
    )
    parser.add_argument(
        "--no-tcp", action="store_true", help="serve UDP only (no TURN over TCP listener)"
    )
    parser.add_argument(
        "--tls-listen",
        metavar="HOST:PORT",
        help="also serve TURN over TLS here (e.g. 0.0.0.0:443 or :5349); needs --tls-cert",
    )
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="certificate chain for --tls-listen (PEM)"
    )
    parser.add_argument(
        "--tls-key", metavar="PEM", help="private key for --tls-cert (default: in the same file)"
    )
    parser.set_defaults(func=run)


def _credentials(args: argparse.Namespace) -> CredentialLookup:
    users: dict[str, str] = {}
    for entry in args.user:
        name, sep, password = entry.partition(":")
        if not sep or not name or not password:
            raise CliError(f"--user {entry!r} is not NAME:PASSWORD")
        users[name] = password
    lookups = [static_users(users)] if users else []
    if args.secret:
        lookups.append(rest_api_credentials(args.secret.encode()))
    if not lookups:
        raise CliError("give at least one --user NAME:PASSWORD or a --secret")
    return first_match(*lookups)


def _port_range(text: str) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise CliError(f"--ports {text!r} is not LOW-HIGH") from None
    if not sep or not 1 <= low <= high <= 65535:
        raise CliError(f"--ports {text!r} is not a range within 1-65535")
    return low, high


def build_config(args: argparse.Namespace) -> tuple[TurnConfig, tuple[str, int]]:
    host, port = parse_hostport(args.listen, default_host="0.0.0.0")
    relay_ip = args.relay_ip or host
    try:
        if ipaddress.ip_address(relay_ip).is_unspecified:
            raise CliError("--listen on 0.0.0.0 needs --relay-ip (the address peers reach)")
    except ValueError:
        raise CliError(f"--relay-ip {relay_ip!r} is not an IP address") from None
    try:
        allow = parse_networks(args.allow_peer)
    except ValueError as error:
        raise CliError(f"--allow-peer: {error}") from None
    try:
        quota = QuotaConfig(
            max_allocations=args.max_allocations,
            max_allocations_per_identity=args.max_per_user,
            max_allocations_per_source_ip=args.max_per_ip,
            bandwidth_bytes_per_second=args.bandwidth_kbps * 1000 // 8,
        )
    except ValueError as error:
        raise CliError(str(error)) from None
    config = TurnConfig(
        realm=args.realm,
        credentials=_credentials(args),
        relay_ip=relay_ip,
        quota=quota,
        policy=PeerAddressPolicy(allow=allow),
        port_range=_port_range(args.ports),
        legacy_channels=args.rfc5766_channels,
    )
    return config, (host, port)


def build_stun(args: argparse.Namespace, listen: tuple[str, int]) -> StunServer | None:
    """RFC 5780 needs two IPs and two ports: (IP, PORT), (IP, PORT+1), (ALT, PORT), (ALT, PORT+1)
    (the TURN core delegates Binding to this server)."""
    if not args.alt_ip:
        return None
    if listen[1] == 0 or listen[1] == 65535:
        raise CliError("--alt-ip needs a fixed --listen port below 65535 (RFC 5780 uses PORT+1)")
    try:
        return StunServer(listen, alt_ip=args.alt_ip, alt_port=listen[1] + 1)
    except ValueError as error:
        raise CliError(f"--alt-ip: {error}") from None


def build_tls(args: argparse.Namespace) -> tuple[tuple[str, int], ssl.SSLContext] | None:
    """The TLS listener and its context, checked before anything is bound."""
    if args.tls_listen is None:
        if args.tls_cert or args.tls_key:
            raise CliError("--tls-cert and --tls-key need --tls-listen")
        return None
    address = parse_hostport(args.tls_listen, default_host="0.0.0.0")
    if not args.tls_cert:
        raise CliError("--tls-listen needs --tls-cert (and --tls-key unless the PEM has both)")
    try:
        context = server_context(Path(args.tls_cert), Path(args.tls_key) if args.tls_key else None)
    except TlsConfigError as error:
        raise CliError(f"TLS: {error}") from None
    return address, context


async def _serve(
    config: TurnConfig,
    listen: tuple[str, int],
    tcp: bool,
    stun: StunServer | None,
    tls: tuple[tuple[str, int], ssl.SSLContext] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    server = TurnServer(config, random.SystemRandom(), loop.time(), stun=stun)
    udp = list(stun.local_addresses) if stun is not None else [listen]
    service = RelayService(
        server,
        udp=udp,
        tcp=[listen] if tcp else [],
        tls=[tls[0]] if tls is not None else [],
        ssl_context=tls[1] if tls is not None else None,
    )
    try:
        addresses = await service.start()
    except OSError as error:
        where = f"{listen[0]}:{listen[1]}"
        if tls is not None:
            where += f" (TLS {tls[0][0]}:{tls[0][1]})"
        raise CliError(f"cannot listen on {where}: {error}") from None
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        udp_text = " ".join(f"udp {h}:{p}" for h, p in addresses.udp)
        tcp_text = " ".join(
            [f"tcp {h}:{p}" for h, p in addresses.tcp] + [f"tls {h}:{p}" for h, p in addresses.tls]
        )
        allowed = ", ".join(str(n) for n in config.policy.allow) or "none"
        print(
            f"p2pnode relay: STUN+TURN on {udp_text} {tcp_text}; realm {config.realm!r}; "
            f"relayed {config.relay_ip} ports {config.port_range[0]}-{config.port_range[1]}; "
            f"max {config.quota.max_allocations} allocations; private peers allowed: {allowed}",
            flush=True,
        )
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        service.close()
        stats = service.statistics()
        print(
            f"p2pnode relay: stopped; {stats.allocations_created} allocations served, "
            f"{stats.packets_to_peer + stats.packets_to_client} packets relayed",
            file=sys.stderr,
            flush=True,
        )


def run(args: argparse.Namespace) -> int:
    config, listen = build_config(args)
    stun = build_stun(args, listen)
    tls = build_tls(args)
    asyncio.run(_serve(config, listen, not args.no_tcp, stun, tls))
    return 0

"""`p2pnode stun` (run a STUN server) and `p2pnode nat` (what kind of NAT am I behind?)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from nat.endpoint import StunService
from p2pnode.cli.common import CliError, parse_hostport

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``stun`` and ``nat``."""
    stun = subparsers.add_parser(
        "stun",
        help="run a STUN server (RFC 8489; RFC 5780 NAT discovery with --alt-ip)",
        description=(
            "Answer STUN Binding requests until SIGINT/SIGTERM. With --alt-ip the "
            "server also listens on a second IP and a second port, and so supports "
            "RFC 5780 NAT behaviour discovery (CHANGE-REQUEST, OTHER-ADDRESS). Prints "
            "one line 'listening ADDR ADDR ...' (primary first) once the sockets are bound."
        ),
    )
    stun.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="primary address, e.g. 0.0.0.0:3478 (port 0 picks a free port)",
    )
    stun.add_argument("--alt-ip", metavar="IP", help="second local IP for RFC 5780 discovery")
    stun.add_argument(
        "--alt-port",
        type=int,
        metavar="PORT",
        help="second port (default with --alt-ip: primary port + 1, or a free one for port 0)",
    )
    stun.set_defaults(func=_run_stun)


def _run_stun(args: argparse.Namespace) -> int:
    listen = parse_hostport(args.listen)
    alt_port: int | None = args.alt_port
    if alt_port is not None and not 0 <= alt_port <= 65535:
        raise CliError(f"--alt-port {alt_port} is out of range 0-65535")
    if args.alt_ip is not None and alt_port is None and listen[1] != 0:
        alt_port = listen[1] + 1 if listen[1] < 65535 else listen[1] - 1
    alt_ip = None
    if args.alt_ip is not None:
        alt_ip, _ = parse_hostport(f"[{args.alt_ip}]:0")
    return asyncio.run(_serve_stun(listen, alt_ip, alt_port))


async def _serve_stun(listen: tuple[str, int], alt_ip: str | None, alt_port: int | None) -> int:
    try:
        service = await StunService.start(listen, alt_ip=alt_ip, alt_port=alt_port)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot listen: {error}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with service:
        print("listening " + " ".join(_fmt(a) for a in service.addresses), flush=True)
        await stop.wait()
        stats = service.statistics()
    with contextlib.suppress(Exception):
        print(
            f"stopped: {stats.responses} responses, {stats.error_responses} error responses, "
            f"{stats.dial_backs} dial-backs, {sum(stats.drops.values())} dropped",
            file=sys.stderr,
        )
    return 0


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

"""`p2pnode demo`: run the demo walkthrough (``p2pnode.demo``) on loopback."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from p2pnode.cli.common import CliError
from p2pnode.demo.walkthrough import DEFAULT_NODES, run_demo

__all__ = ["register"]


def cmd_demo(args: argparse.Namespace) -> int:
    if not 3 <= args.nodes <= 500:
        raise CliError("--nodes must be between 3 and 500")
    if not 1 <= args.lookups <= 50:
        raise CliError("--lookups must be between 1 and 50")
    return asyncio.run(run_demo(args.nodes, args.lookups, args.seed))


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `demo`."""
    demo = subparsers.add_parser(
        "demo",
        help="run the whole system on loopback: DHT, directory, ENUM DNS gateway, supernode",
        description="In this process, on 127.0.0.1 only, in a few seconds: start N DHT "
        "nodes; each publishes a signed presence record and looks up others'; an attacker's "
        "forged, re-signed and rolled-back records are rejected. Then alice and a squatter "
        "claim the same login and phone number, and a verifier's countersignature settles "
        "whom a resolver trusts; the ENUM DNS gateway answers NAPTR queries for the number "
        "from the DHT (UDP and TCP, NXDOMAIN for an unknown one); and a node judged reachable "
        "by three dial-back STUN servers becomes a supernode that another node finds in the "
        "DHT and relays a datagram through (TURN). Exits 0 only if every step checks out.",
    )
    demo.add_argument(
        "--nodes", type=int, default=DEFAULT_NODES, help=f"how many nodes (default {DEFAULT_NODES})"
    )
    demo.add_argument("--lookups", type=int, default=3, help="lookups per node (default 3)")
    demo.add_argument("--seed", type=int, default=1, help="seed for choosing whom to look up")
    demo.set_defaults(func=cmd_demo)

"""`p2pnode demo`: run the demo walkthrough (``p2pnode.demo``): peers behind NATs when it can.

As root with ``ip`` and ``nft`` the peer steps run in a netns NAT lab (whole
`p2pnode run` nodes behind a port-restricted and a symmetric NAT); otherwise on
loopback, and one line says why and how to get the lab. ``--lab`` and
``--loopback`` force either.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from p2pnode.cli.common import CliError
from p2pnode.demo.natlab import lab_availability
from p2pnode.demo.walkthrough import DEFAULT_NODES, run_demo

__all__ = ["register"]


def cmd_demo(args: argparse.Namespace) -> int:
    if not 3 <= args.nodes <= 500:
        raise CliError("--nodes must be between 3 and 500")
    if not 1 <= args.lookups <= 50:
        raise CliError("--lookups must be between 1 and 50")
    lab = False
    if not args.loopback:
        available = lab_availability(os.geteuid())
        if args.lab and not available.possible:
            raise CliError(f"--lab: {available.reason}; try: sudo scripts/demo --lab")
        lab = available.possible
        if not lab:
            print(
                f"*** NAT lab skipped: {available.reason}. The peers run on loopback, not "
                "behind NATs; for two peers behind real NATs run: sudo scripts/demo ***",
                flush=True,
            )
    return asyncio.run(run_demo(args.nodes, args.lookups, args.seed, lab=lab))


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `demo`."""
    demo = subparsers.add_parser(
        "demo",
        help="run the whole system: DHT, directory, ENUM DNS gateway, supernode, peers, phones",
        description="In a few seconds to a minute: start N DHT nodes on 127.0.0.1; each "
        "publishes a signed presence record and looks up others'; an attacker's forged, "
        "re-signed and rolled-back records are rejected. alice and a squatter claim the same "
        "login and phone number, and a verifier's countersignature settles whom a resolver "
        "trusts; the ENUM DNS gateway answers NAPTR queries from the DHT; a node judged "
        "reachable by three dial-back STUN servers becomes a supernode and relays a datagram "
        "(TURN). Then two peers find each other by login, open a link, write while one is "
        "offline (mailboxes) and call with a tone each side: as root with ip and nft, as "
        "`p2pnode run` nodes behind a port-restricted and a symmetric NAT in a network-"
        "namespace lab (removed afterwards, also on Ctrl-C), where a phone behind its own "
        "NAT also calls bob through the gateway's bridge and back; else on loopback. Last, "
        "two phones call through the SIP gateway (and, on loopback, a phone calls a peer). "
        "Exits 0 only if every step checks out.",
    )
    demo.add_argument(
        "--nodes", type=int, default=DEFAULT_NODES, help=f"how many nodes (default {DEFAULT_NODES})"
    )
    demo.add_argument("--lookups", type=int, default=3, help="lookups per node (default 3)")
    demo.add_argument("--seed", type=int, default=1, help="seed for choosing whom to look up")
    where = demo.add_mutually_exclusive_group()
    where.add_argument(
        "--lab", action="store_true", help="peers behind NATs in a netns lab (root; else exit 2)"
    )
    where.add_argument("--loopback", action="store_true", help="peers on loopback even as root")
    demo.set_defaults(func=cmd_demo)

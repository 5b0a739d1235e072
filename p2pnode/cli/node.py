"""`p2pnode init`, `p2pnode id`, `p2pnode run`: a node's identity and its long-running life."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from p2pnode.app.node import P2PNode
from p2pnode.cli.common import CliError, add_home_argument, parse_hostport
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity, IdentityError, default_home

__all__ = ["register"]


def home_of(args: argparse.Namespace) -> Path:
    home: Path | None = args.home
    return home if home is not None else default_home()


def cmd_init(args: argparse.Namespace) -> int:
    home = home_of(args)
    existed = (home / "identity.key").exists()
    try:
        identity = Identity.load_or_create(home)
    except (IdentityError, OSError) as error:
        raise CliError(str(error)) from None
    verb = "already initialised" if existed else "created a new identity"
    print(f"{home}: {verb}")
    print(f"peer id:     {identity.peer_id}")
    print(f"fingerprint: {identity.fingerprint}")
    return 0


def load_identity(args: argparse.Namespace) -> Identity:
    try:
        return Identity.load(home_of(args))
    except IdentityError as error:
        raise CliError(str(error)) from None


def cmd_id(args: argparse.Namespace) -> int:
    identity = load_identity(args)
    print(f"peer id:     {identity.peer_id}")
    print(f"fingerprint: {identity.fingerprint}")
    print(f"node id:     {identity.node_id.hex()}")
    print(f"public key:  {identity.public_key.hex()}")
    return 0


def describe(dht: DhtNode) -> str:
    stats = dht.statistics()
    if dht.core.healthy:
        health = "healthy"
    elif not dht.core.bootstrap_addresses:
        health = "first node: waiting for others to join"
    else:
        health = f"bootstrapping, wants {dht.config.healthy_contacts}"
    return (
        f"table: {stats.contacts} contacts in {stats.buckets_used} buckets ({health}); "
        f"records held: {stats.records}; datagrams in/out: {stats.datagrams_in}/"
        f"{stats.datagrams_out}; dropped: {sum(stats.drops.values())}"
    )


async def run_node(args: argparse.Namespace) -> int:
    listen = parse_hostport(args.listen, default_host="0.0.0.0")
    bootstrap = [parse_hostport(text) for text in args.bootstrap]
    load_identity(args)  # a clear error before binding anything
    node = P2PNode(home_of(args), listen=listen, bootstrap=bootstrap, client_mode=args.client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await node.start()
        except OSError as error:
            raise CliError(f"cannot listen on {args.listen}: {error}") from None
        host, port = node.address
        print(f"p2pnode {node.identity.peer_id} ({node.identity.fingerprint})", flush=True)
        print(f"listening on {host}:{port}", flush=True)
        print(describe(node.dht), flush=True)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            wait = args.status_interval
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not stop.is_set():
                print(describe(node.dht), flush=True)
        print("shutting down: " + describe(node.dht), flush=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await node.stop()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(run_node(args))


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `init`, `id` and `run`."""
    init = subparsers.add_parser(
        "init",
        help="create this node's identity (an Ed25519 key) in its home directory",
        description="Create the node's Ed25519 identity in --home (file mode 0600). "
        "Running it again keeps the existing identity.",
    )
    add_home_argument(init)
    init.set_defaults(func=cmd_init)

    ident = subparsers.add_parser(
        "id",
        help="show this node's peer id, fingerprint, node id and public key",
        description="Print the identity stored in --home.",
    )
    add_home_argument(ident)
    ident.set_defaults(func=cmd_id)

    run = subparsers.add_parser(
        "run",
        help="run a DHT node until SIGINT/SIGTERM",
        description="Run a long-lived node: listen on UDP, join the network through the "
        "bootstrap nodes, store and serve signed records, print the routing table health.",
    )
    add_home_argument(run)
    run.add_argument(
        "--listen",
        default="0.0.0.0:0",
        metavar="HOST:PORT",
        help="UDP address to listen on (default 0.0.0.0:0, an ephemeral port)",
    )
    run.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node already in the network (repeatable); none: start a new network",
    )
    run.add_argument(
        "--client",
        action="store_true",
        help="client mode: query only, never enter other nodes' routing tables",
    )
    run.add_argument(
        "--status-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="print the table health this often (default 30)",
    )
    run.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop by itself after this long (default: run until a signal)",
    )
    run.set_defaults(func=cmd_run)

"""`p2pnode init`, `p2pnode id`, `p2pnode run`: a node's identity and its long-running life."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import time
from pathlib import Path
from typing import Any

from p2pnode.app.node import P2PNode, RoleOptions
from p2pnode.app.supernode import SupernodeConfig
from p2pnode.cli.common import CliError, add_home_argument, parse_hostport
from p2pnode.connectivity.relays import RelayCandidate
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


def role_options(args: argparse.Namespace) -> RoleOptions:
    """The supernode and STUN roles from ``run``'s options (errors a person can act on)."""
    relay_host, relay_port = parse_hostport(args.relay_listen, default_host="0.0.0.0")
    for cidr in args.allow_peer:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise CliError(f"--allow-peer {cidr!r} is not an address range (CIDR)") from None
    public_ip: str | None = None
    if args.public is not None:
        public_ip, _ = parse_hostport(f"[{args.public}]:0")
    if args.relay_capacity < 1:
        raise CliError("--relay-capacity must be at least 1")
    if args.check_interval <= 0:
        raise CliError("--check-interval must be positive")
    supernode = SupernodeConfig(
        host=relay_host,
        port=relay_port,
        realm=args.realm,
        capacity=args.relay_capacity,
        opt_out=args.no_relay,
        check_interval=args.check_interval,
        # An asserted verdict cannot flap: confirm it at once instead of after 30 s.
        pending_check_interval=1.0 if public_ip else min(30.0, args.check_interval),
        allow_peers=tuple(args.allow_peer),
    )
    serve_stun = None
    if args.serve_stun is not None:
        serve_stun = parse_hostport(args.serve_stun, default_host="0.0.0.0")
    stun_alt_ip = None
    if args.stun_alt_ip is not None:
        stun_alt_ip, _ = parse_hostport(f"[{args.stun_alt_ip}]:0")
        if serve_stun is None:
            raise CliError("--stun-alt-ip needs --serve-stun")
    return RoleOptions(
        supernode=supernode,
        stun_servers=tuple(parse_hostport(text) for text in args.stun),
        min_agree=args.min_agree,
        public_ip=public_ip,
        serve_stun=serve_stun,
        stun_alt_ip=stun_alt_ip,
        find_relays=not args.no_relay_search,
    )


def describe_relays(chosen: tuple[RelayCandidate, ...], node: P2PNode) -> str:
    if node.relays is None:
        return "relays: not searched (--no-relay-search)"
    if not chosen:
        known = len(node.relays.selector)
        return f"relays: none usable yet ({known} advertised supernodes known)"
    parts = []
    for relay in chosen:
        host, port = relay.probe_address[1]
        rtt = node.relays.selector.rtt_of(relay.owner)
        rtt_text = f"{rtt * 1000:.1f} ms" if rtt is not None else "unchecked"
        load = f"{relay.advert.load}/{relay.advert.capacity}"
        parts.append(f"{host}:{port} ({rtt_text}, load {load})")
    return "relays: " + ", ".join(parts)


async def report_until(node: P2PNode, stop: asyncio.Event, status_interval: float) -> None:
    """Print the role and the chosen relays whenever they change, the table health periodically."""
    shown: tuple[object, str] | None = None
    shown_relays: tuple[bytes, ...] | None = None
    next_health = time.monotonic() + status_interval
    while not stop.is_set():
        status = node.role()
        if status is not None and (status.role, status.reason) != shown:
            shown = (status.role, status.reason)
            print(status.describe(), flush=True)
        chosen = node.chosen_relays()
        if tuple(relay.owner for relay in chosen) != shown_relays:
            shown_relays = tuple(relay.owner for relay in chosen)
            print(describe_relays(chosen, node), flush=True)
        if time.monotonic() >= next_health:
            next_health = time.monotonic() + status_interval
            print(describe(node.dht), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.25)


async def stop_after(stop: asyncio.Event, duration: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration)
    stop.set()


async def run_node(args: argparse.Namespace) -> int:
    listen = parse_hostport(args.listen, default_host="0.0.0.0")
    bootstrap = [parse_hostport(text) for text in args.bootstrap]
    roles = role_options(args)
    load_identity(args)  # a clear error before binding anything
    node = P2PNode(
        home_of(args), listen=listen, bootstrap=bootstrap, client_mode=args.client, roles=roles
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await node.start()
        except (OSError, ValueError) as error:
            raise CliError(f"cannot listen: {error}") from None
        host, port = node.address
        print(f"p2pnode {node.identity.peer_id} ({node.identity.fingerprint})", flush=True)
        print(f"listening on {host}:{port} (DHT, UDP)", flush=True)
        if node.stun is not None:
            where = " ".join(f"{h}:{p}" for h, p in node.stun.addresses)
            print(f"STUN server (with dial-back) on {where}", flush=True)
        print(describe(node.dht), flush=True)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(node.run(stop))
            tasks.create_task(report_until(node, stop, args.status_interval))
            if args.duration:
                tasks.create_task(stop_after(stop, args.duration))
        status = node.role()
        if status is not None:
            print("shutting down: " + status.describe(), flush=True)
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
        help="run a node (DHT; relay supernode when publicly reachable) until SIGINT/SIGTERM",
        description="Run a long-lived node: listen on UDP, join the network through the "
        "bootstrap nodes, store and serve signed records, check reachability and take the "
        "supernode role when it is public, print the role taken and why, and the routing "
        "table health.",
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
    add_role_arguments(run)
    run.set_defaults(func=cmd_run)


def add_role_arguments(run: argparse.ArgumentParser) -> None:
    """Reachability, the supernode (relay) role and the STUN server of ``run``."""
    roles = run.add_argument_group(
        "reachability and the supernode role",
        "A node that proves it is publicly reachable (STUN servers dial it back, "
        "several must agree) promotes itself to a relay supernode: STUN + TURN on "
        "--relay-listen, UDP and TCP, and a signed relay advert in the DHT. It demotes "
        "itself gracefully (existing calls keep running) when that stops being true.",
    )
    roles.add_argument(
        "--stun",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a STUN server with dial-back (p2pnode stun, or another node's --serve-stun) "
        "to judge reachability against (repeatable); the dial-back servers that "
        "supernodes advertise in the DHT are asked too, so once three exist none are needed",
    )
    roles.add_argument(
        "--min-agree",
        type=int,
        default=3,
        metavar="N",
        help="servers that must agree on a verdict (default 3; only with --no-relay-search "
        "is it lowered to the number of --stun servers given)",
    )
    roles.add_argument(
        "--public",
        metavar="IP",
        help="assert this node is publicly reachable at IP (skip the measurement)",
    )
    roles.add_argument(
        "--no-relay",
        action="store_true",
        help="never serve as a relay supernode (opt out)",
    )
    roles.add_argument(
        "--no-relay-search",
        action="store_true",
        help="do not look for supernodes to relay through (by default the node finds "
        "advertised supernodes in the DHT, health-checks them and keeps the best two, "
        "and asks their dial-back STUN servers to judge its own reachability)",
    )
    roles.add_argument(
        "--relay-listen",
        default="0.0.0.0:3478",
        metavar="HOST:PORT",
        help="where the relay serves STUN and TURN, UDP and TCP (default 0.0.0.0:3478); "
        "a supernode also serves STUN with dial-back on the next port (UDP), for other "
        "nodes' reachability checks, unless --serve-stun runs one already",
    )
    roles.add_argument(
        "--relay-capacity",
        type=int,
        default=100,
        metavar="N",
        help="allocations carried at most; above it new ones are refused (default 100)",
    )
    roles.add_argument(
        "--realm", default="p2pnode", help="TURN realm of the relay (default p2pnode)"
    )
    roles.add_argument(
        "--allow-peer",
        action="append",
        default=[],
        metavar="CIDR",
        help="let the relay reach peers in this internal range (denied by default; repeatable)",
    )
    roles.add_argument(
        "--check-interval",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds between reachability checks (default 300; 30 while a change is pending)",
    )
    roles.add_argument(
        "--serve-stun",
        metavar="HOST:PORT",
        help="also run a STUN server with dial-back here, for other nodes' reachability checks",
    )
    roles.add_argument(
        "--stun-alt-ip",
        metavar="IP",
        help="second IP of the STUN server, for RFC 5780 NAT behaviour discovery",
    )

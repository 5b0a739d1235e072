"""`p2pnode init`, `p2pnode id`, `p2pnode run`: a node's identity and its long-running life."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pnode.app.config import ConfigError, NodeConfig
from p2pnode.cli.common import CliError, add_home_argument, parse_hostport
from p2pnode.cli.config import load_for
from p2pnode.dht.puzzle import DEFAULT_ID_DIFFICULTY, MAX_ID_DIFFICULTY, id_meets
from p2pnode.identity import Identity, IdentityError, default_home

if TYPE_CHECKING:  # the runtime is imported by `run` only: other commands start faster
    from p2pnode.app.runtime import Assembly
    from p2pnode.connectivity.supernode import SupernodeStatus
    from p2pnode.dht import DhtNode

__all__ = ["register"]


def home_of(args: argparse.Namespace) -> Path:
    home: Path | None = args.home
    return home if home is not None else default_home()


def cmd_init(args: argparse.Namespace) -> int:
    home = home_of(args)
    key = home / "identity.key"
    existed = key.exists()
    bits = 0 if args.client else args.difficulty
    if existed and args.replace:
        try:
            old = Identity.load(home)
        except IdentityError as error:
            raise CliError(str(error)) from None
        if id_meets(old.node_id, bits):
            print(f"{home}: the identity meets {bits} puzzle bits already; kept")
        else:
            kept = key.with_name(f"identity.key.{old.fingerprint}.old")
            key.rename(kept)
            print(f"{home}: moved the old identity ({old.peer_id}) to {kept.name}")
            existed = False
    if not existed and bits:
        print(f"grinding a DHT server identity ({bits} puzzle bits, ~{2**bits:,} keys)", flush=True)
    began = time.monotonic()

    def progress(tries: int) -> None:
        print(f"  {tries:,} keys tried, {time.monotonic() - began:.1f} s", flush=True)

    try:
        identity = Identity.load_or_create(home, bits=bits, progress=progress)
    except (IdentityError, OSError) as error:
        raise CliError(str(error)) from None
    verb = "already initialised" if existed else "created a new identity"
    print(f"{home}: {verb}")
    print(f"peer id:     {identity.peer_id}")
    print(f"fingerprint: {identity.fingerprint}")
    if not id_meets(identity.node_id, bits):
        print(
            f"note: its node id lacks {bits} puzzle bits: `p2pnode run` serves the DHT only "
            "on loopback or as a client; `p2pnode init --replace` makes a server identity"
        )
    return 0


def load_identity(args: argparse.Namespace) -> Identity:
    try:
        return Identity.load(home_of(args))
    except IdentityError as error:
        raise CliError(str(error)) from None


def cmd_id(args: argparse.Namespace) -> int:
    identity = load_identity(args)
    if args.json:
        print(
            json.dumps(
                {
                    "peer_id": identity.peer_id,
                    "fingerprint": identity.fingerprint,
                    "node_id": identity.node_id.hex(),
                    "public_key": identity.public_key.hex(),
                },
                indent=2,
            )
        )
        return 0
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


def _flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags given on the command line as ``{section: {key: value}}``; each is
    checked here first so its error names the flag, not the config key."""
    for cidr in args.allow_peer or ():
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise CliError(f"--allow-peer {cidr!r} is not an address range (CIDR)") from None
    if args.public is not None:
        parse_hostport(f"[{args.public}]:0")
    if args.stun_alt_ip is not None:
        parse_hostport(f"[{args.stun_alt_ip}]:0")
    if args.relay_capacity is not None and args.relay_capacity < 1:
        raise CliError("--relay-capacity must be at least 1")
    if args.check_interval is not None and args.check_interval <= 0:
        raise CliError("--check-interval must be positive")
    for text in [args.listen, args.relay_listen, args.serve_stun, args.enum_listen,
                 args.metrics_listen, *(args.bootstrap or ()), *(args.stun or ())]:  # fmt: skip
        if text is not None:
            parse_hostport(text, default_host="0.0.0.0")
    given: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: object) -> None:
        if value is not None:
            given.setdefault(section, {})[key] = value

    put("node", "listen", args.listen)
    put("node", "bootstrap", args.bootstrap)
    put("node", "client", True if args.client else None)
    put("node", "status_interval", args.status_interval)
    put("supernode", "stun", args.stun)
    put("supernode", "min_agree", args.min_agree)
    put("supernode", "public_ip", args.public)
    put("supernode", "relay", False if args.no_relay else None)
    put("supernode", "relay_search", False if args.no_relay_search else None)
    put("supernode", "check_interval", args.check_interval)
    put("supernode", "serve_stun", args.serve_stun)
    put("supernode", "stun_alt_ip", args.stun_alt_ip)
    put("relay", "listen", args.relay_listen)
    put("relay", "capacity", args.relay_capacity)
    put("relay", "realm", args.realm)
    put("relay", "allow_peers", args.allow_peer)
    put("relay", "drain_limit", args.drain_limit)
    if args.enum_listen is not None:
        put("enum", "enabled", True)
        put("enum", "listen", args.enum_listen)
    put("enum", "trust", args.trust)
    put("control", "port", args.control_port)
    put("control", "enabled", False if args.no_control else None)
    put("metrics", "listen", args.metrics_listen)
    put("log", "format", args.log_format)
    return given


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The configuration file (if any) with the command-line flags applied over it."""
    overrides = _flag_overrides(args)
    config = load_for(args)
    stun = overrides.get("supernode", {})
    if stun.get("stun_alt_ip") and not (stun.get("serve_stun") or config.supernode.serve_stun):
        raise CliError("--stun-alt-ip needs --serve-stun")
    try:
        return config.override(overrides)
    except ConfigError as error:
        raise CliError(str(error)) from None


def describe_relays(assembly: Assembly) -> str:
    relays = assembly.relays
    if relays is None:
        return "relays: not searched (--no-relay-search)"
    chosen = relays.finder.chosen()
    if not chosen:
        known = len(relays.finder.selector)
        return f"relays: none usable yet ({known} advertised supernodes known)"
    parts = []
    for relay in chosen:
        host, port = relay.probe_address[1]
        rtt = relays.finder.selector.rtt_of(relay.owner)
        rtt_text = f"{rtt * 1000:.1f} ms" if rtt is not None else "unchecked"
        load = f"{relay.advert.load}/{relay.advert.capacity}"
        parts.append(f"{host}:{port} ({rtt_text}, load {load})")
    return "relays: " + ", ".join(parts)


def _role(assembly: Assembly) -> SupernodeStatus | None:
    supernode = assembly.supernode
    if supernode is None or supernode.controller is None:
        return None
    return supernode.controller.status()


def print_started(assembly: Assembly) -> None:
    identity = assembly.identity
    host, port = assembly.dht.address
    print(f"p2pnode {identity.peer_id} ({identity.fingerprint})", flush=True)
    print(f"listening on {host}:{port} (DHT, UDP)", flush=True)
    if assembly.stun is not None and assembly.stun.server is not None:
        where = " ".join(f"{h}:{p}" for h, p in assembly.stun.server.addresses)
        print(f"STUN server (with dial-back) on {where}", flush=True)
    if assembly.turn is not None and assembly.turn.bound.udp:
        where = " ".join(f"{h}:{p}" for h, p in assembly.turn.bound.udp)
        tls = "".join(f"; TLS on {h}:{p}" for h, p in assembly.turn.bound.tls)
        print(f"TURN server (standalone) on {where} udp+tcp{tls}", flush=True)
    if assembly.enum is not None and assembly.enum.address is not None:
        h, p = assembly.enum.address
        print(f"ENUM DNS gateway on udp+tcp {h}:{p}", flush=True)
    if assembly.control is not None and assembly.control.url:
        print(f"control API on {assembly.control.url}", flush=True)
    if assembly.metrics is not None and assembly.metrics.url:
        print(f"metrics on {assembly.metrics.url}", flush=True)
    print(describe(assembly.dht.node), flush=True)


async def report_until(assembly: Assembly, stop: asyncio.Event, status_interval: float) -> None:
    """Print the role and the chosen relays whenever they change, the table health periodically."""
    shown: tuple[object, str] | None = None
    shown_relays: tuple[tuple[str, int], ...] | None = None
    next_health = time.monotonic() + status_interval
    while not stop.is_set():
        status = _role(assembly)
        if status is not None and (status.role, status.reason) != shown:
            shown = (status.role, status.reason)
            print(status.describe(), flush=True)
        chosen = assembly.relays.statistics().chosen if assembly.relays is not None else ()
        if chosen != shown_relays:
            shown_relays = chosen
            print(describe_relays(assembly), flush=True)
        if time.monotonic() >= next_health:
            next_health = time.monotonic() + status_interval
            print(describe(assembly.dht.node), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.25)


async def stop_after(stop: asyncio.Event, duration: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration)
    stop.set()


async def run_node(args: argparse.Namespace) -> int:
    # Imported here, not at the top: only `run` needs the runtime (aiohttp, services),
    # and every other command starts ~0.5 s faster without it.
    from p2pnode.app.logs import configure_logging  # noqa: PLC0415
    from p2pnode.app.node import NodeStartError  # noqa: PLC0415
    from p2pnode.app.runtime import assemble, reload  # noqa: PLC0415

    config = node_config(args)
    level = {0: config.log.level, 1: "info"}.get(args.verbose, "debug")
    configure_logging(level, config.log.format, config.log.modules)
    identity = load_identity(args)  # a clear error before binding anything
    assembly = assemble(home_of(args), config, identity)
    node = assembly.node
    requested = asyncio.Event()  # a signal or --duration: print, then let the node drain
    node_stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload_config() -> None:
        nonlocal config
        try:
            fresh = node_config(args)
        except CliError as error:
            logging.getLogger(__name__).warning("reload refused: %s", error)
            return
        reload(config, fresh)
        config = fresh

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, requested.set)
    loop.add_signal_handler(signal.SIGHUP, reload_config)

    async def life() -> None:
        ready = asyncio.ensure_future(node.ready.wait())
        try:
            await asyncio.wait([ready, running], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if running.done():
            return
        print_started(assembly)
        async with asyncio.TaskGroup() as tasks:
            reporter = tasks.create_task(
                report_until(assembly, requested, config.node.status_interval)
            )
            if args.duration:
                tasks.create_task(stop_after(requested, args.duration))
            await requested.wait()
            await reporter
        status = _role(assembly)
        if status is not None:
            print("shutting down: " + status.describe(), flush=True)
        print("shutting down: " + describe(assembly.dht.node), flush=True)
        node.request_stop("signal" if not args.duration else "--duration")

    try:
        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(node.run(node_stop))
            tasks.create_task(life())
    except* NodeStartError as group:
        error = group.exceptions[0]
        raise CliError(f"cannot listen: {error}") from None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(run_node(args))


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `init`, `id` and `run`."""
    init = subparsers.add_parser(
        "init",
        help="create this node's identity (an Ed25519 key) in its home directory",
        description="Create the node's Ed25519 identity in --home (file mode 0600). "
        "Running it again keeps the existing identity. A DHT server's node id needs "
        "puzzle bits (S/Kademlia; [dht] id_difficulty): init grinds keys until one has "
        "them (about 2 s at 16 bits), unless --client.",
    )
    add_home_argument(init)
    init.add_argument(
        "--difficulty",
        type=int,
        choices=range(MAX_ID_DIFFICULTY + 1),
        metavar=f"0-{MAX_ID_DIFFICULTY}",
        default=DEFAULT_ID_DIFFICULTY,
        help=f"puzzle bits to grind for (default {DEFAULT_ID_DIFFICULTY}: the network's)",
    )
    init.add_argument(
        "--client",
        action="store_true",
        help="no grinding: this node only queries the DHT (attaches to homes)",
    )
    init.add_argument(
        "--replace",
        action="store_true",
        help="if the identity lacks the puzzle bits, keep it aside as identity.key.<fp>.old "
        "and make a server identity (a new peer id: contacts must learn it)",
    )
    init.set_defaults(func=cmd_init)

    ident = subparsers.add_parser(
        "id",
        help="show this node's peer id, fingerprint, node id and public key",
        description="Print the identity stored in --home.",
    )
    add_home_argument(ident)
    ident.add_argument("--json", action="store_true", help="answer as JSON")
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
        "--config",
        type=Path,
        metavar="FILE",
        help="configuration file (default: <home>/p2pnode.toml if it exists); "
        "the flags below override it",
    )
    run.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="UDP address to listen on (default 0.0.0.0:0, an ephemeral port)",
    )
    run.add_argument(
        "--bootstrap",
        action="append",
        default=None,
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
        default=None,
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
    add_service_arguments(run)
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
        default=None,
        metavar="HOST:PORT",
        help="a STUN server with dial-back (p2pnode stun, or another node's --serve-stun) "
        "to judge reachability against (repeatable); the dial-back servers that "
        "supernodes advertise in the DHT are asked too, so once three exist none are needed",
    )
    roles.add_argument(
        "--min-agree",
        type=int,
        default=None,
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
        default=None,
        metavar="HOST:PORT",
        help="where the relay serves STUN and TURN, UDP and TCP (default 0.0.0.0:3478); "
        "a supernode also serves STUN with dial-back on the next port (UDP), for other "
        "nodes' reachability checks, unless --serve-stun runs one already",
    )
    roles.add_argument(
        "--relay-capacity",
        type=int,
        default=None,
        metavar="N",
        help="allocations carried at most; above it new ones are refused (default 100)",
    )
    roles.add_argument("--realm", default=None, help="TURN realm of the relay (default p2pnode)")
    roles.add_argument(
        "--allow-peer",
        action="append",
        default=None,
        metavar="CIDR",
        help="let the relay reach peers in this internal range (denied by default; repeatable)",
    )
    roles.add_argument(
        "--check-interval",
        type=float,
        default=None,
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


def add_service_arguments(run: argparse.ArgumentParser) -> None:
    """The ENUM gateway, the control API, metrics, logs and the shutdown drain."""
    group = run.add_argument_group("services, control API, metrics and logs")
    group.add_argument(
        "--enum-listen",
        metavar="HOST:PORT",
        help="run the ENUM DNS gateway here, UDP and TCP ([enum] in the config file)",
    )
    group.add_argument(
        "--trust",
        action="append",
        default=None,
        metavar="VERIFIER_PEER_ID",
        help="verifier whose countersignatures the gateway and the API trust (repeatable)",
    )
    group.add_argument(
        "--control-port",
        type=int,
        metavar="PORT",
        help="port of the local control API on 127.0.0.1 (default derived from the home; "
        "0: any free port)",
    )
    group.add_argument("--no-control", action="store_true", help="no control API")
    group.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="serve Prometheus /metrics here (off)"
    )
    group.add_argument(
        "--drain-limit",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long live relay allocations may go on (default 30)",
    )
    group.add_argument(
        "--log-format", choices=("kv", "json"), help="key=value lines (default) or JSON lines"
    )

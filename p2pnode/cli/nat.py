"""`p2pnode stun` (run a STUN server) and `p2pnode nat` (what kind of NAT am I behind?).

`p2pnode nat --json` is a stable interface (the netns lab tests read it); its
fields are documented in docs/nat.md. Keep them backwards compatible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from nat.behaviour import (
    FilteringBehaviour,
    MappingBehaviour,
    NatBehaviour,
    NatClass,
    nat_class,
)
from nat.endpoint import StunService
from nat.lifetime import MAX_LIFETIME_PROBE, MappingLifetime
from nat.reachability import DEFAULT_MIN_AGREE, Reachability
from nat.runner import (
    ReachabilityReport,
    check_reachability,
    discover_nat,
    estimate_mapping_lifetime,
    route_source_ip,
)
from p2pnode.cli.common import CliError, parse_hostport

# Both checks run at once; each stops by this many seconds whatever happens.
NAT_TIME_LIMIT = 8.0

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

    nat = subparsers.add_parser(
        "nat",
        help="find out what NAT you are behind and whether peers can reach you",
        description=(
            "Runs RFC 5780 NAT behaviour discovery against the first --stun server "
            "(it needs a server started with --alt-ip; the next one is tried if not) "
            "and asks every --stun server to dial this host back (reachability). "
            "Takes a few seconds, never more than about 10."
        ),
    )
    nat.add_argument(
        "--stun",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a STUN server (repeat for several; reachability wants 3 or more)",
    )
    nat.add_argument(
        "--min-agree",
        type=int,
        metavar="N",
        help=f"servers that must agree on reachability (default {DEFAULT_MIN_AGREE}, "
        "or all of them if fewer are given)",
    )
    nat.add_argument("--local-ip", metavar="IP", help="local IP to test from (default: routed)")
    nat.add_argument(
        "--lifetime",
        type=float,
        metavar="MAX",
        help="also estimate how long the NAT keeps an idle mapping, probing up to MAX "
        f"seconds (at most {MAX_LIFETIME_PROBE:.0f}; the run then takes about MAX seconds)",
    )
    nat.add_argument("--json", action="store_true", help="print one JSON object (see docs/nat.md)")
    nat.set_defaults(func=_run_nat)


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


def _run_nat(args: argparse.Namespace) -> int:
    servers = list(dict.fromkeys(parse_hostport(text) for text in args.stun))
    min_agree = (
        args.min_agree if args.min_agree is not None else min(DEFAULT_MIN_AGREE, len(servers))
    )
    if min_agree < 1:
        raise CliError("--min-agree must be at least 1")
    local_ip: str | None = None
    if args.local_ip is not None:
        local_ip, _ = parse_hostport(f"[{args.local_ip}]:0")
    try:
        local_ip = local_ip or route_source_ip(servers[0])
    except OSError as error:
        raise CliError(f"no route to {_fmt(servers[0])}: {error}") from None
    lifetime_max: float | None = args.lifetime
    if lifetime_max is not None and not 0 < lifetime_max <= MAX_LIFETIME_PROBE:
        raise CliError(f"--lifetime must be in (0, {MAX_LIFETIME_PROBE:.0f}] seconds")
    started = time.monotonic()
    behaviour, reachability, lifetime = asyncio.run(
        _nat_checks(servers, local_ip, min_agree, lifetime_max)
    )
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps(_as_json(behaviour, reachability, lifetime, elapsed), sort_keys=True))
    else:
        print(_as_text(behaviour, reachability, lifetime))
    return 0


async def _nat_checks(
    servers: list[tuple[str, int]], local_ip: str, min_agree: int, lifetime_max: float | None
) -> tuple[NatBehaviour, ReachabilityReport, MappingLifetime | None]:
    async def discovery() -> NatBehaviour:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + NAT_TIME_LIMIT
        result = await discover_nat(servers[0], local_ip=local_ip, time_limit=NAT_TIME_LIMIT)
        for server in servers[1:]:
            # Not an RFC 5780 server (no OTHER-ADDRESS)? Try the next while time is left.
            left = give_up - loop.time()
            if result.other_address is not None or result.mapped_address is None or left < 3:
                break
            result = await discover_nat(server, local_ip=local_ip, time_limit=left)
        return result

    async def lifetime() -> MappingLifetime | None:
        if lifetime_max is None:
            return None
        return await estimate_mapping_lifetime(servers[0], lifetime_max, local_ip=local_ip)

    async with asyncio.TaskGroup() as group:
        behaviour = group.create_task(discovery())
        reachability = group.create_task(
            check_reachability(
                servers, local_ip=local_ip, min_agree=min_agree, time_limit=NAT_TIME_LIMIT
            )
        )
        mapping_lifetime = group.create_task(lifetime())
    return behaviour.result(), reachability.result(), mapping_lifetime.result()


def _addr(address: tuple[str, int] | None) -> str | None:
    return None if address is None else _fmt(address)


def _as_json(
    behaviour: NatBehaviour,
    reachability: ReachabilityReport,
    lifetime: MappingLifetime | None,
    elapsed: float,
) -> dict[str, Any]:
    return {
        "mapping_lifetime": None
        if lifetime is None
        else {
            "alive_after": lifetime.lower,
            "gone_after": lifetime.upper,
            "checkpoints": list(lifetime.checkpoints),
        },
        "mapping": behaviour.mapping.name.lower(),
        "filtering": behaviour.filtering.name.lower(),
        "nat_type": nat_class(behaviour).name.lower(),
        "mapped_address": _addr(behaviour.mapped_address),
        "local_address": _addr(behaviour.local_address),
        "hairpinning": behaviour.hairpinning,
        "discovery_server": _addr(behaviour.server),
        "other_address": _addr(behaviour.other_address),
        "reachability": reachability.status.name.lower(),
        "reachability_min_agree": reachability.min_agree,
        "reachability_local_address": _addr(reachability.local_address),
        "reachability_servers": [
            {
                "server": _addr(o.server),
                "mapped_address": _addr(o.mapped_address),
                "dial_back_promised": o.dial_back_promised,
                "dial_back_received": o.dial_back_received,
                "vote": None if vote is None else vote.name.lower(),
            }
            for o, vote in zip(reachability.observations, reachability.votes, strict=True)
        ],
        "elapsed_seconds": round(elapsed, 3),
    }


_MAPPING_TEXT = {
    MappingBehaviour.NO_NAT: "none: your address is your own",
    MappingBehaviour.ENDPOINT_INDEPENDENT: (
        "endpoint-independent: one public port, whoever you talk to"
    ),
    MappingBehaviour.ADDRESS_DEPENDENT: "address-dependent: a new public port per peer IP",
    MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT: (
        "address-and-port-dependent: a new public port per peer IP and port"
    ),
    MappingBehaviour.UDP_BLOCKED: "UDP blocked: no STUN answer at all",
    MappingBehaviour.UNKNOWN: "unknown (no RFC 5780 server, or answers were lost)",
}
_FILTERING_TEXT = {
    FilteringBehaviour.ENDPOINT_INDEPENDENT: "endpoint-independent: anyone may send to you",
    FilteringBehaviour.ADDRESS_DEPENDENT: (
        "address-dependent: only IPs you have sent to may send to you"
    ),
    FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT: (
        "address-and-port-dependent: only the exact IP and port you sent to"
    ),
    FilteringBehaviour.UDP_BLOCKED: "UDP blocked",
    FilteringBehaviour.UNKNOWN: "unknown (the server cannot answer from another address)",
}
_ADVICE = {
    NatClass.NONE: "Peers can reach you directly; this node can serve others (relay, STUN).",
    NatClass.FIREWALLED: "No NAT, but a firewall filters: open the port to serve others.",
    NatClass.FULL_CONE: "Direct connections work with everyone once your address is known.",
    NatClass.ADDRESS_RESTRICTED: "Hole punching works with every peer.",
    NatClass.PORT_RESTRICTED: (
        "Hole punching works, except with peers behind symmetric NATs (they need a relay)."
    ),
    NatClass.SYMMETRIC: (
        "Hole punching works only with peers on open or cone NATs; others need a relay."
    ),
    NatClass.UDP_BLOCKED: "Calls need a relay over TCP; UDP is blocked here.",
    NatClass.UNKNOWN: "Could not classify; try an RFC 5780 server (p2pnode stun --alt-ip).",
}
_REACHABILITY_TEXT = {
    Reachability.PUBLIC: "public: peers can connect to you first",
    Reachability.BEHIND_NAT: "behind NAT/firewall: peers cannot connect to you first",
    Reachability.UNKNOWN: "unknown: not enough servers agreed",
}


def _lifetime_text(lifetime: MappingLifetime) -> str:
    if lifetime.lower is None and lifetime.upper is None:
        return "could not measure"
    if lifetime.upper is None:
        return f"more than {lifetime.lower:g} s (the longest tested)"
    if lifetime.lower is None:
        return f"less than {lifetime.upper:g} s"
    low, high = lifetime.lower, lifetime.upper
    return f"between {low:g} and {high:g} s (send keepalives more often than every {low:g} s)"


def _as_text(
    behaviour: NatBehaviour, reachability: ReachabilityReport, lifetime: MappingLifetime | None
) -> str:
    def yes_no(value: bool | None) -> str:
        return "not tested" if value is None else ("yes" if value else "no")

    kind = nat_class(behaviour)
    lines = [
        f"NAT type:      {kind.value}",
        f"  mapping:     {_MAPPING_TEXT[behaviour.mapping]}",
        f"  filtering:   {_FILTERING_TEXT[behaviour.filtering]}",
        f"  hairpinning: {yes_no(behaviour.hairpinning)}",
        f"  local:       {_fmt(behaviour.local_address)}",
        f"  public:      {_addr(behaviour.mapped_address) or 'unknown'}",
        f"  (RFC 5780 discovery via {_fmt(behaviour.server)})",
        *([f"  idle mapping lifetime: {_lifetime_text(lifetime)}"] if lifetime else []),
        f"Reachability:  {_REACHABILITY_TEXT[reachability.status]}",
        f"  ({reachability.min_agree} of {len(reachability.observations)} server(s) must agree)",
    ]
    for observation, vote in zip(reachability.observations, reachability.votes, strict=True):
        if observation.mapped_address is None:
            seen = "no answer"
        else:
            probe = (
                "dial-back arrived"
                if observation.dial_back_received
                else "dial-back did not arrive"
                if observation.dial_back_promised
                else "no dial-back offered"
            )
            seen = f"saw you at {_fmt(observation.mapped_address)}, {probe}"
        verdict = "no vote" if vote is None else vote.value
        lines.append(f"  {_fmt(observation.server)}: {seen} -> {verdict}")
    lines.append(_ADVICE[kind])
    return "\n".join(lines)

"""`p2pnode status`: the running node's role and why, table health, relay load, services.

It only asks the running node of the home (through its control API); with no
node running it says so and exits 3 (a status cannot be had by joining).
"""

from __future__ import annotations

import argparse
from typing import Any

from p2pnode.app.api_models import StatusAnswer
from p2pnode.cli.common import EXIT_OK, NetworkFailureError, add_home_argument
from p2pnode.cli.control_client import running_node, say
from p2pnode.identity import default_home

__all__ = ["describe_status", "register"]


def describe_status(answer: StatusAnswer) -> list[str]:
    table = answer.table
    health = "healthy" if table.healthy else "not healthy yet"
    lines = [
        f"p2pnode {answer.peer_id} ({answer.fingerprint}), up {answer.uptime:.0f} s",
        f"DHT on {answer.dht_address}: {table.contacts} contacts in {table.buckets_used} "
        f"buckets ({health}); records held: {table.records}; datagrams in/out: "
        f"{table.datagrams_in}/{table.datagrams_out}",
    ]
    relay = answer.relay
    if relay is not None:
        line = f"role: {relay.role} ({relay.reason})"
        if relay.relay_udp:
            gate = "accepting" if relay.accepting else "refusing new allocations"
            line += (
                f"; relay on {', '.join(relay.relay_udp)}, "
                f"{relay.load}/{relay.capacity} allocations, {gate}"
            )
        lines.append(line)
        lines.append("relays: " + (", ".join(relay.chosen_relays) or "none chosen"))
    for service in answer.services:
        extra = f", {service.restarts} restart(s)" if service.restarts else ""
        lines.append(f"service {service.name}: {service.state} ({service.reason}{extra})")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    home = args.home if args.home is not None else default_home()
    node = running_node(home)
    if node is None:
        raise NetworkFailureError(f"no node is running in {home} (start one: p2pnode run)")
    say(f"asking the running node of {home} at {node.url}")
    answer = node.request("GET", "/api/status", StatusAnswer)
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        print("\n".join(describe_status(answer)))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `status`."""
    status = subparsers.add_parser(
        "status",
        help="the running node's role and why, table health, relay load, services",
        description="Ask the node running in --home (p2pnode run) how it is doing.",
    )
    add_home_argument(status)
    status.add_argument("--json", action="store_true", help="the API's JSON answer")
    status.set_defaults(func=cmd_status)

"""Supernode promotion in the netns lab: a public node is promoted, a NATed node is not,
and the NATed node then relays through the promoted one, found through the DHT.

Topology: one public host with three addresses runs three `p2pnode stun` servers
(dial-back on: the reachability checks need three agreeing servers) and a UDP
echo peer; a public host and a host behind a symmetric NAT each run a DHT node
and the supernode controller with the *measured* verdict (nat.runner's dial-back
checks, no injected verdict). The NATed host bootstraps from the public one,
finds its advert in the DHT, health-checks it over STUN, gets credentials over
the DHT RPC, allocates with aioice's TURN client and exchanges data with the
echo peer through the relay.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.netns import Host, Lab, NatType, read_line
from tests.lab.conftest import require_lab_tools

pytestmark = pytest.mark.lab

NODE = r"""
import asyncio, json, sys
from aioice.turn import create_turn_endpoint
from p2pnode.connectivity.supernode import Supernode, SupernodeConfig
from p2pnode.connectivity.verdicts import stun_verdicts
from p2pnode.connectivity.credentials import request_credentials
from p2pnode.connectivity.relays import RELAY_BUCKETS, RelayFinder
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from relay.supernode import Hysteresis


class Inbox(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait(data)


async def use_relay(dht, echo):
    async def fetch(key):
        return (await dht.get(key)).records

    finder = RelayFinder(fetch, own_key=dht.identity.public_key)
    found = await finder.discover(range(RELAY_BUCKETS))
    chosen = await finder.refresh()
    if not chosen:
        return {"found": found, "chosen": 0, "drops": dict(finder.drops.counts()),
                "stats": repr(dht.statistics())}
    relay = chosen[0]
    credentials = await request_credentials(dht, relay.advert.dht[0], relay.owner)
    turn, inbox = await create_turn_endpoint(
        Inbox, relay.advert.udp[0], credentials.username, credentials.password
    )
    echoed = False
    try:
        for _ in range(20):
            turn.sendto(b"through the supernode", echo)
            try:
                data = await asyncio.wait_for(inbox.queue.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            echoed = data == b"through the supernode"
            break
        relayed = turn.get_extra_info("related_address") or turn.get_extra_info("sockname")
    finally:
        turn.close()
        await asyncio.sleep(0.2)
    return {
        "found": found,
        "chosen": len(chosen),
        "relay": list(relay.advert.udp[0]),
        "rtt": finder.selector.rtt_of(relay.owner),
        "echoed": echoed,
        "relayed": list(relayed) if relayed else None,
    }


async def main(cfg):
    bootstrap = [tuple(a) for a in cfg["bootstrap"]]
    # The public node is the DHT server the other joins through: its id meets the puzzle.
    identity = Identity.generate_meeting(16) if cfg["serve"] else Identity.generate()
    dht = DhtNode(identity, listen=(cfg["ip"], 0), bootstrap=bootstrap)
    await dht.start()
    supernode = Supernode(
        dht.identity,
        dht,
        SupernodeConfig(
            host=cfg["ip"],
            port=0,
            capacity=4,
            allow_peers=("203.0.113.0/24",),
            hysteresis=Hysteresis(promote_after=2),
        ),
        verdicts=stun_verdicts([tuple(s) for s in cfg["stun"]], min_agree=3),
    )
    try:
        for _ in range(3):
            status = await supernode.check_reachability()
        report = {
            "role": status.role.name,
            "reachability": status.reachability.name,
            "status": status.describe(),
            "dht": list(dht.address),
        }
        if cfg["echo"] is not None:
            report["relay_use"] = await use_relay(dht, tuple(cfg["echo"]))
        print(json.dumps(report), flush=True)
        if cfg["serve"]:  # keep serving until the test closes our stdin
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            relay = supernode.relay
            report = {"load_seen": relay.server.allocations_created if relay else -1}
            print(json.dumps(report), flush=True)
    finally:
        await supernode.close()
        await dht.close()


asyncio.run(main(json.loads(sys.argv[1])))
"""

ECHO = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 0))
print(sock.getsockname()[1], flush=True)
while True:
    data, peer = sock.recvfrom(2048)
    sock.sendto(data, peer)
"""


def start_stun(host: Host, ip: str) -> tuple[str, int]:
    proc = host.popen(host.python("-m", "p2pnode", "stun", "--listen", f"{ip}:0"))
    words = read_line(proc, timeout=20).split()
    assert words[0] == "listening", words
    address, port = words[1].rsplit(":", 1)
    return address, int(port)


def node(host: Host, config: dict[str, object]) -> subprocess.Popen[str]:
    return host.popen(
        host.python("-c", NODE, json.dumps(config)), stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )


@dataclass(frozen=True)
class Reports:
    relay_host: Host
    relay: dict[str, Any]  # the public node's report after three reachability rounds
    natted: dict[str, Any]  # the NATed node's report, with its attempt to use the relay
    relay_after: dict[str, Any]  # the public node's last words (allocations it served)


@pytest.fixture(scope="module")
def reports() -> Iterator[Reports]:
    require_lab_tools()
    with Lab() as lab:
        services = lab.public_host("services", addresses=3)
        stun = [start_stun(services, ip) for ip in services.addresses]
        echo_proc = services.popen(services.python("-c", ECHO, services.addresses[0]))
        echo = (services.addresses[0], int(read_line(echo_proc, timeout=10)))
        public = lab.public_host("relay")
        natted = lab.private_host("natted", NatType.SYMMETRIC)
        relay_proc = node(
            public,
            {"ip": public.addresses[0], "stun": stun, "bootstrap": [], "echo": None, "serve": True},
        )
        relay_report = json.loads(read_line(relay_proc, timeout=60))
        natted_proc = node(
            natted,
            {
                "ip": natted.addresses[0],
                "stun": stun,
                "bootstrap": [relay_report["dht"]],
                "echo": echo,
                "serve": False,
            },
        )
        out, err = natted_proc.communicate(timeout=90)
        assert natted_proc.returncode == 0, err[-3000:]
        relay_out, relay_err = relay_proc.communicate("stop\n", timeout=30)
        assert relay_proc.returncode == 0, relay_err[-3000:]
        yield Reports(
            public,
            relay_report,
            json.loads(out.splitlines()[-1]),
            json.loads(relay_out.splitlines()[-1]),
        )


def test_public_node_is_promoted(reports: Reports) -> None:
    assert reports.relay["reachability"] == "PUBLIC", reports.relay
    assert reports.relay["role"] == "SUPERNODE", reports.relay
    assert "public (2 in a row)" in reports.relay["status"]
    assert reports.relay_host.addresses[0] in reports.relay["status"]


def test_natted_node_is_not_promoted(reports: Reports) -> None:
    assert reports.natted["reachability"] == "BEHIND_NAT", reports.natted
    assert reports.natted["role"] == "CLIENT", reports.natted
    assert "behind NAT" in reports.natted["status"], reports.natted


def test_natted_node_finds_and_uses_the_supernode_through_the_dht(reports: Reports) -> None:
    use = reports.natted["relay_use"]
    assert use["chosen"] == 1, use
    assert use["relay"][0] == reports.relay_host.addresses[0]
    assert use["rtt"] is not None
    assert use["echoed"], use
    assert reports.relay_after["load_seen"] >= 1

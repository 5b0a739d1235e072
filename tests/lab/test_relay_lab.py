"""Our TURN relay on a lab public host carries traffic that no hole punch could.

Symmetric NAT on both sides defeats hole punching (LAB-NOTES: the textbook
matrix); a UDP-blocking firewall defeats UDP entirely. In both cases two aioice
ICE agents restricted to relay candidates connect through `p2pnode relay` and
exchange data. The agents run inside the NATed namespaces; the test process
carries their offers (ufrag, password, candidates) across as the signalling
channel would.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness.netns import PUBLIC_NETWORK, Host, Lab, NatType, read_line
from tests.lab.conftest import require_lab_tools

pytestmark = pytest.mark.lab

# One ICE agent: gather relay candidates, print the offer, read the answer from
# stdin, connect, send our name, print what the other side sent.
AGENT = r"""
import asyncio, json, sys
import aioice

async def main(server: str, port: int, transport: str, controlling: bool, name: str) -> None:
    connection = aioice.Connection(
        ice_controlling=controlling,
        turn_server=(server, port),
        turn_username="alice",
        turn_password="wonderland",
        turn_transport=transport,
        transport_policy=aioice.TransportPolicy.RELAY,
    )
    await asyncio.wait_for(connection.gather_candidates(), 15)
    offer = {
        "ufrag": connection.local_username,
        "pwd": connection.local_password,
        "candidates": [c.to_sdp() for c in connection.local_candidates],
    }
    print(json.dumps(offer), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    answer = json.loads(line)
    for sdp in answer["candidates"]:
        await connection.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
    await connection.add_remote_candidate(None)
    connection.remote_username = answer["ufrag"]
    connection.remote_password = answer["pwd"]
    await asyncio.wait_for(connection.connect(), 20)
    await connection.send(name.encode())
    received = await asyncio.wait_for(connection.recv(), 10)
    print(json.dumps({"received": received.decode()}), flush=True)
    await asyncio.sleep(0.5)  # let the other side's last packet drain through
    await connection.close()

server, port, transport, controlling, name = sys.argv[1:6]
asyncio.run(main(server, int(port), transport, controlling == "1", name))
"""


@dataclass(frozen=True)
class RelayLab:
    lab: Lab
    relay: Host
    relay_process: subprocess.Popen[str]
    port: int
    hosts: dict[str, Host]


@pytest.fixture(scope="module")
def relay_lab() -> Iterator[RelayLab]:
    require_lab_tools()
    with Lab() as lab:
        relay = lab.public_host("relay")
        hosts = {
            "left": lab.private_host("left", NatType.SYMMETRIC),
            "right": lab.private_host("right", NatType.SYMMETRIC),
            "blocked": lab.private_host("blocked", NatType.UDP_BLOCKED),
        }
        process = relay.popen(
            relay.python(
                "-m", "p2pnode", "relay", "--listen", f"{relay.addresses[0]}:0",
                "--realm", "lab", "--user", "alice:wonderland",
                # The lab's "public" segment is TEST-NET-3, denied by default.
                "--allow-peer", PUBLIC_NETWORK,
            )
        )  # fmt: skip
        banner = read_line(process, timeout=20)
        match = re.search(rf"udp {re.escape(relay.addresses[0])}:(\d+)", banner)
        assert match, banner
        yield RelayLab(lab, relay, process, int(match.group(1)), hosts)


def connect_pair(relay_lab: RelayLab, left: tuple[str, str], right: tuple[str, str]) -> None:
    """Run two agents (host name, client transport), swap offers, check both got through."""
    agents: list[subprocess.Popen[str]] = []
    for index, (name, transport) in enumerate((left, right)):
        host = relay_lab.hosts[name]
        agents.append(
            host.popen(
                host.python(
                    "-c", AGENT, relay_lab.relay.addresses[0], str(relay_lab.port),
                    transport, "1" if index == 0 else "0", name,
                ),
                stdin=subprocess.PIPE,
            )
        )  # fmt: skip
    offers = [json.loads(read_line(agent, timeout=30)) for agent in agents]
    for offer in offers:
        # Relay-only: every candidate is a relayed address on the relay host.
        assert offer["candidates"], offer
        for sdp in offer["candidates"]:
            assert " typ relay" in sdp and relay_lab.relay.addresses[0] in sdp, sdp
    for agent, offer in zip(agents, reversed(offers), strict=True):
        assert agent.stdin is not None
        agent.stdin.write(json.dumps(offer) + "\n")
        agent.stdin.flush()
    results = []
    for agent in agents:
        try:
            results.append(json.loads(read_line(agent, timeout=40)))
        except Exception:
            agent.kill()
            raise AssertionError(agent.communicate(timeout=10)) from None
    assert results[0] == {"received": right[0]}
    assert results[1] == {"received": left[0]}
    for agent in agents:
        assert agent.wait(timeout=20) == 0, agent.communicate(timeout=10)


def test_symmetric_nat_to_symmetric_nat_through_the_relay(relay_lab: RelayLab) -> None:
    connect_pair(relay_lab, ("left", "udp"), ("right", "udp"))


def test_udp_blocked_peer_reaches_its_relay_over_tcp(relay_lab: RelayLab) -> None:
    connect_pair(relay_lab, ("blocked", "tcp"), ("right", "udp"))


def test_udp_blocked_peer_cannot_use_udp(relay_lab: RelayLab) -> None:
    """The firewall is real: over UDP the blocked host gathers no relay candidate."""
    host = relay_lab.hosts["blocked"]
    agent = host.popen(
        host.python(
            "-c", AGENT, relay_lab.relay.addresses[0], str(relay_lab.port), "udp", "1", "x"
        ),
        stdin=subprocess.PIPE,
    )  # fmt: skip
    offer = json.loads(read_line(agent, timeout=30))
    assert offer["candidates"] == []
    agent.kill()
    agent.communicate(timeout=10)


def test_relay_counted_the_traffic_and_stops_cleanly(relay_lab: RelayLab) -> None:
    """Last in the module: it stops the shared relay."""
    connect_pair(relay_lab, ("right", "udp"), ("left", "udp"))
    process = relay_lab.relay_process
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    match = re.search(r"(\d+) allocations served, (\d+) packets relayed", stderr)
    assert match, stderr
    assert int(match.group(1)) >= 2 and int(match.group(2)) > 0, stderr

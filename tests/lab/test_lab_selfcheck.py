"""The lab checks itself: every router behaves as labelled, with a plain UDP probe.

The probe (tests/harness/lab_probe.py) is independent of the STUN code the lab
exists to test: a reflector with two addresses and two ports reports the source
it sees, and a classifier behind each router compares mappings per destination
and tries unsolicited replies from another IP and another port.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.lab_interop import (
    free_udp_port,
    natdiscovery_argv,
    parse_natdiscovery,
    start_turnserver,
    summary,
    wait_for_stun,
)
from tests.harness.netns import STATE_DIR, Host, Lab, NatType, read_line
from tests.harness.tools import require_tool
from tests.lab.conftest import require_lab_tools

pytestmark = pytest.mark.lab

PROBE = str(Path(__file__).resolve().parents[1] / "harness" / "lab_probe.py")

EXPECTED: dict[NatType, tuple[str | None, str | None]] = {
    NatType.NONE: ("endpoint-independent", "endpoint-independent"),
    NatType.FULL_CONE: ("endpoint-independent", "endpoint-independent"),
    NatType.ADDRESS_RESTRICTED: ("endpoint-independent", "address-dependent"),
    NatType.PORT_RESTRICTED: ("endpoint-independent", "address-and-port-dependent"),
    NatType.SYMMETRIC: ("address-and-port-dependent", "address-and-port-dependent"),
    NatType.UDP_BLOCKED: (None, None),
}


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def start_reflector(server: Host) -> dict[str, list[Any]]:
    proc = server.popen(server.python(PROBE, "reflect", *server.addresses[:2]))
    ports: dict[str, list[Any]] = json.loads(read_line(proc))
    return ports


def classify_cmd(host: Host, ports: dict[str, list[Any]]) -> list[str]:
    return host.python(
        PROBE, "classify", ports["A"][0], ports["C"][0], str(ports["A"][1]), str(ports["B"][1])
    )


@pytest.fixture(scope="module")
def matrix() -> Iterator[tuple[Lab, dict[NatType, Host], dict[NatType, dict[str, Any]]]]:
    """One router of each type, all classified side by side (the probes wait on silence)."""
    require_lab_tools()
    with Lab() as topology:
        server = topology.public_host("reflector", addresses=2)
        hosts = {nat: topology.private_host(nat.name.lower(), nat) for nat in NatType}
        ports = start_reflector(server)
        probes = {nat: host.popen(classify_cmd(host, ports)) for nat, host in hosts.items()}
        results = {}
        for nat, proc in probes.items():
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            results[nat] = json.loads(out)
        yield topology, hosts, results


@pytest.mark.parametrize("nat", list(NatType), ids=lambda nat: nat.name)
def test_router_behaves_as_labelled(
    matrix: tuple[Lab, dict[NatType, Host], dict[NatType, dict[str, Any]]], nat: NatType
) -> None:
    _topology, hosts, results = matrix
    result = results[nat]
    mapping, filtering = EXPECTED[nat]
    assert (result["mapping"], result["filtering"]) == (mapping, filtering), result
    assert result["udp"] is (nat is not NatType.UDP_BLOCKED)
    if result["udp"]:
        observed_ips = {m[0] for m in result["mapped"]}
        # The reflector sees the router's WAN address (or the host itself when public).
        assert observed_ips == {hosts[nat].public_address}
        if nat is NatType.NONE:
            assert hosts[nat].public_address == hosts[nat].addresses[0]
        else:
            assert hosts[nat].addresses[0].startswith("10.")


@pytest.mark.interop
def test_coturn_natdiscovery_agrees_with_the_labels(
    matrix: tuple[Lab, dict[NatType, Host], dict[NatType, dict[str, Any]]],
) -> None:
    """A third-party RFC 5780 classifier (coturn client and server) sees the same NATs."""
    require_tool("turnserver", "coturn")
    require_tool("turnutils_natdiscovery", "coturn")
    topology, hosts, _results = matrix
    server = topology.hosts["reflector"]
    port = free_udp_port(server)
    start_turnserver(server, port)
    wait_for_stun(hosts[NatType.NONE], server.addresses[0], port)
    runs = {
        nat: host.popen(natdiscovery_argv(server.addresses[0], port), stderr=subprocess.STDOUT)
        for nat, host in hosts.items()
    }
    for nat, proc in runs.items():
        output, _ = proc.communicate(timeout=60)
        assert parse_natdiscovery(output) == EXPECTED[nat], (nat, summary(output))


def test_udp_blocked_passes_tcp(lab: Lab) -> None:
    server = lab.public_host("tcp")
    blocked = lab.private_host("blocked", NatType.UDP_BLOCKED)
    serve = server.popen(server.python(PROBE, "tcp-serve", server.addresses[0]))
    port = json.loads(read_line(serve))["port"]
    seen = json.loads(
        blocked.run(blocked.python(PROBE, "tcp-observe", server.addresses[0], str(port))).stdout
    )
    assert seen["tcp"] is True, seen
    assert seen["observed"][0] == blocked.public_address  # TCP is NATed, not blocked
    reflector = lab.public_host("udp", addresses=2)
    ports = start_reflector(reflector)
    result = json.loads(blocked.run(classify_cmd(blocked, ports)).stdout)
    assert result["udp"] is False


def test_loss_drops_and_can_be_removed(lab: Lab) -> None:
    reflector = lab.public_host("reflector", addresses=2)
    client = lab.public_host("client")
    ports = start_reflector(reflector)
    lab.set_loss(client, 100.0)
    assert json.loads(client.run(classify_cmd(client, ports)).stdout)["udp"] is False
    lab.set_loss(client, 0.0)
    assert json.loads(client.run(classify_cmd(client, ports)).stdout)["udp"] is True


def test_partial_loss_drops_about_that_share(lab: Lab) -> None:
    """40 % ingress loss on one host: of 400 datagrams, far fewer than all and far more than none.

    The bounds are 8+ standard deviations wide (binomial, n=400, p=0.6: mean
    240, sd ~10), so the test only fails if the loss is not what was asked for.
    """
    sender = lab.public_host("sender")
    receiver = lab.public_host("receiver")
    lab.set_loss(receiver, 40.0, both_directions=False)
    sink = receiver.popen(receiver.python(PROBE, "sink", receiver.addresses[0]))
    port = json.loads(read_line(sink))["port"]
    sender.run(sender.python(PROBE, "burst", receiver.addresses[0], str(port), "400"), check=True)
    received = json.loads(read_line(sink, timeout=15))["received"]
    assert 160 <= received <= 320, received


def test_delay_holds_every_packet_and_can_be_removed(lab: Lab) -> None:
    """A lower bound only: each round trip through a delayed link takes >= 2x the delay."""
    reflector = lab.public_host("reflector", addresses=2)
    client = lab.private_host("client", NatType.PORT_RESTRICTED)
    ports = start_reflector(reflector)
    require_tool("iptables-restore", "iptables")
    rtt = client.python(PROBE, "rtt", ports["A"][0], str(ports["A"][1]), "3")
    lab.set_delay(client, 60.0)
    delayed = json.loads(client.run(rtt).stdout)
    assert all(ms is not None and ms >= 120.0 for ms in delayed), delayed
    lab.set_delay(client, 0.0)
    rules = client.run(["iptables", "-t", "raw", "-S"], check=True).stdout
    assert "NFQUEUE" not in rules
    assert all(ms is not None for ms in json.loads(client.run(rtt).stdout))


def test_binding_lifetime_is_configured(lab: Lab) -> None:
    host = lab.private_host("cone", NatType.FULL_CONE, binding_lifetime=7)
    assert host.router_namespace is not None
    router = Host("router", host.router_namespace, [], host.public_address)
    for name in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
        value = router.run(["cat", f"/proc/sys/net/netfilter/{name}"], check=True).stdout
        assert value.strip() == "7"
    ruleset = router.run(["nft", "list", "map", "ip", "lab_cone", "binding"], check=True).stdout
    assert "timeout 7s" in ruleset


def test_binding_expires_after_its_lifetime(lab: Lab) -> None:
    """A symmetric NAT picks a random port per new binding: after the lifetime, a new one."""
    reflector = lab.public_host("reflector", addresses=2)
    host = lab.private_host("sym", NatType.SYMMETRIC, binding_lifetime=1)
    ports = start_reflector(reflector)
    # Idle 3 s > 1 s lifetime (conntrack checks expiry on lookup, so no GC wait).
    seen = json.loads(
        host.run(host.python(PROBE, "rebind", ports["A"][0], str(ports["A"][1]), "3")).stdout
    )
    first, again, after_idle = seen
    assert first is not None and first == again  # a live binding is reused
    assert after_idle is not None and after_idle != first, seen


def test_teardown_leaves_nothing_and_is_idempotent() -> None:
    require_lab_tools()
    topology = Lab().start()
    public = topology.public_host("server")
    topology.private_host("natted", NatType.SYMMETRIC)
    sleeper = public.popen(public.python("-c", "import time; time.sleep(60)"))
    assert {ns for ns in _namespaces() if ns.startswith(topology.prefix)} == set(
        topology.namespaces()
    )
    topology.close()
    topology.close()
    assert sleeper.poll() is not None
    assert not [ns for ns in _namespaces() if ns.startswith(topology.prefix)]
    assert not (STATE_DIR / f"{topology.prefix}.json").exists()


def test_scripts_lab_up_list_exec_down() -> None:
    """The hand-debugging CLI builds a persistent lab, lists it, runs in it, removes it."""
    require_lab_tools()
    script = str(Path(__file__).resolve().parents[2] / "scripts" / "lab")
    prefix = "t" + secrets.token_hex(3)

    def lab_cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, script, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        up = lab_cli("up", "--prefix", prefix, "--nat", "symmetric")
        assert f"{prefix}h1" in up and "SYMMETRIC" in up
        with Lab():  # a new Lab's stale cleanup leaves a persistent lab alone
            assert f"{prefix}r1" in _namespaces()
        assert prefix in lab_cli("list")
        shown = lab_cli("exec", prefix, "pub1", "--", "ip", "-o", "-4", "addr", "show", "eth0")
        assert "203.0.113." in shown
    finally:
        lab_cli("down", prefix)
    assert not [ns for ns in _namespaces() if ns.startswith(prefix)]
    assert prefix not in lab_cli("list")


def test_crashed_run_is_cleaned_by_the_next_lab() -> None:
    """A process that builds a lab and dies without teardown leaves nothing for long."""
    require_lab_tools()
    crash = (
        "import os\n"
        "from tests.harness.netns import Lab, NatType\n"
        "lab = Lab().start()\n"
        "lab.private_host('h', NatType.FULL_CONE)\n"
        "print(lab.prefix, flush=True)\n"
        "os._exit(1)\n"
    )
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", crash],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=30,
        check=False,
    )
    prefix = out.stdout.strip()
    assert prefix.startswith("p2p"), out.stderr
    assert len([ns for ns in _namespaces() if ns.startswith(prefix)]) == 3  # switch, router, host
    with Lab():
        assert not [ns for ns in _namespaces() if ns.startswith(prefix)]
        assert not (STATE_DIR / f"{prefix}.json").exists()

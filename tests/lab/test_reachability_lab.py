"""Reachability in the lab: a public host is judged public, every NATed host is not.

Three public hosts (two addresses each) run ``p2pnode stun``: STUN and
dial-back servers. Every other host runs ``p2pnode nat --stun S1 --stun S2
--stun S3 --json`` RUNS times in a row (hosts side by side). Besides a host
behind each router type there is a public host behind its own stateful
firewall: no NAT, but unsolicited dial-backs cannot reach it, so it must not be
judged public either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.lab_p2pnode import collect_runs, repeated_nat_runs, start_stun
from tests.harness.netns import Host, Lab, NatType
from tests.lab.conftest import require_lab_tools

pytestmark = pytest.mark.lab

RUNS = 3  # the verdict must be the same every time
SERVERS = 3  # the CLI's default --min-agree
FIREWALLED = "firewalled"


@dataclass(frozen=True)
class ReachabilityLab:
    hosts: dict[str, Host]  # NatType name, or FIREWALLED
    results: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def verdicts() -> Iterator[ReachabilityLab]:
    require_lab_tools()
    with Lab() as lab:
        servers = [start_stun(lab.public_host(f"stun{i}", addresses=2)) for i in range(SERVERS)]
        hosts = {nat.name: lab.private_host(nat.name.lower(), nat) for nat in NatType}
        hosts[FIREWALLED] = lab.public_host(FIREWALLED)
        lab.set_firewall(hosts[FIREWALLED])
        addresses = [server.primary for server in servers]
        results = collect_runs(
            {key: repeated_nat_runs(host, addresses, RUNS) for key, host in hosts.items()}
        )
        yield ReachabilityLab(hosts, results)


def _statuses(runs: list[dict[str, Any]]) -> list[str | None]:
    return [run.get("reachability") for run in runs]


def test_public_host_is_judged_public(verdicts: ReachabilityLab) -> None:
    runs = verdicts.results[NatType.NONE.name]
    assert _statuses(runs) == ["public"] * RUNS, runs
    for run in runs:
        votes = [server["vote"] for server in run["reachability_servers"]]
        assert votes == ["public"] * SERVERS, run
        assert all(server["dial_back_received"] for server in run["reachability_servers"])


@pytest.mark.parametrize(
    "nat", [nat for nat in NatType if nat is not NatType.NONE], ids=lambda nat: nat.name
)
def test_natted_host_is_not_public(verdicts: ReachabilityLab, nat: NatType) -> None:
    runs = verdicts.results[nat.name]
    assert len(runs) == RUNS
    if nat is NatType.UDP_BLOCKED:
        # No server answers over UDP: nothing to agree on, and certainly not "public".
        assert _statuses(runs) == ["unknown"] * RUNS, runs
        return
    assert _statuses(runs) == ["behind_nat"] * RUNS, runs
    wan = verdicts.hosts[nat.name].public_address
    for run in runs:
        for server in run["reachability_servers"]:
            assert server["vote"] == "behind_nat", run
            # Every server saw the router's WAN address, never the private one.
            assert server["mapped_address"].rsplit(":", 1)[0] == wan


def test_firewalled_public_host_is_not_public(verdicts: ReachabilityLab) -> None:
    """Its own address is what servers see, but their dial-backs are filtered."""
    runs = verdicts.results[FIREWALLED]
    assert _statuses(runs) == ["behind_nat"] * RUNS, runs
    host = verdicts.hosts[FIREWALLED]
    for run in runs:
        assert run["nat_type"] == "firewalled", run
        for server in run["reachability_servers"]:
            assert server["mapped_address"].rsplit(":", 1)[0] == host.addresses[0]
            assert server["dial_back_received"] is False

"""Our RFC 5780 STUN server and NAT discovery, behind every kind of lab router.

One lab for the module: a public host with two addresses runs
``p2pnode stun --listen IP1:0 --alt-ip IP2``; one private host sits behind a
router of each ``NatType`` and runs ``p2pnode nat --stun IP1:PORT --json``
RUNS times in a row. Hosts run side by side (the filtering tests wait on
silence), and each test then checks one router type.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.lab_interop import natdiscovery_argv, parse_natdiscovery, summary
from tests.harness.lab_p2pnode import collect_runs, repeated_nat_runs, start_stun
from tests.harness.netns import Host, Lab, NatType
from tests.harness.tools import require_tool
from tests.lab.conftest import require_lab_tools

pytestmark = pytest.mark.lab

# RFC 4787 (mapping, filtering) each router is built to have; None: no UDP at all.
EXPECTED: dict[NatType, tuple[str | None, str | None]] = {
    NatType.NONE: ("endpoint-independent", "endpoint-independent"),
    NatType.FULL_CONE: ("endpoint-independent", "endpoint-independent"),
    NatType.ADDRESS_RESTRICTED: ("endpoint-independent", "address-dependent"),
    NatType.PORT_RESTRICTED: ("endpoint-independent", "address-and-port-dependent"),
    NatType.SYMMETRIC: ("address-and-port-dependent", "address-and-port-dependent"),
    NatType.UDP_BLOCKED: (None, None),
}


# The same, in `p2pnode nat --json` words: (mapping, filtering, nat_type).
EXPECTED_JSON: dict[NatType, tuple[str, str, str]] = {
    NatType.NONE: ("no_nat", "endpoint_independent", "none"),
    NatType.FULL_CONE: ("endpoint_independent", "endpoint_independent", "full_cone"),
    NatType.ADDRESS_RESTRICTED: ("endpoint_independent", "address_dependent", "address_restricted"),
    NatType.PORT_RESTRICTED: (
        "endpoint_independent",
        "address_and_port_dependent",
        "port_restricted",
    ),
    NatType.SYMMETRIC: ("address_and_port_dependent", "address_and_port_dependent", "symmetric"),
    NatType.UDP_BLOCKED: ("udp_blocked", "udp_blocked", "udp_blocked"),
}
RUNS = 3  # repeated discoveries per host: the answer must be stable


@dataclass(frozen=True)
class StunLab:
    lab: Lab
    server: Host
    port: int  # primary port of our STUN server on server.addresses[0]
    alternates: tuple[str, ...]  # every address:port it announced
    hosts: dict[NatType, Host]


def _ids(nat: NatType) -> str:
    return nat.name


@pytest.fixture(scope="module")
def stun_lab() -> Iterator[StunLab]:
    require_lab_tools()
    with Lab() as lab:
        server = lab.public_host("stun", addresses=2)
        hosts = {nat: lab.private_host(nat.name.lower(), nat) for nat in NatType}
        stun = start_stun(server)
        yield StunLab(lab, server, stun.port, tuple(stun.addresses), hosts)


@pytest.fixture(scope="module")
def coturn_views(stun_lab: StunLab) -> dict[NatType, str]:
    """coturn's RFC 5780 client run against our server behind every router, side by side."""
    require_tool("turnutils_natdiscovery", "coturn")
    runs = {
        nat: host.popen(
            natdiscovery_argv(stun_lab.server.addresses[0], stun_lab.port),
            stderr=subprocess.STDOUT,
        )
        for nat, host in stun_lab.hosts.items()
    }
    return {nat: proc.communicate(timeout=60)[0] for nat, proc in runs.items()}


@pytest.fixture(scope="module")
def discoveries(stun_lab: StunLab) -> dict[NatType, list[dict[str, Any]]]:
    """RUNS discoveries per host against our two-address server, hosts side by side."""
    stun = [f"{stun_lab.server.addresses[0]}:{stun_lab.port}"]
    return collect_runs(
        {nat: repeated_nat_runs(host, stun, RUNS) for nat, host in stun_lab.hosts.items()}
    )


@pytest.mark.parametrize("nat", list(NatType), ids=_ids)
def test_discovery_reports_the_routers_behaviour(
    stun_lab: StunLab, discoveries: dict[NatType, list[dict[str, Any]]], nat: NatType
) -> None:
    runs = discoveries[nat]
    assert len(runs) == RUNS
    first = runs[0]
    assert (first.get("mapping"), first.get("filtering"), first.get("nat_type")) == EXPECTED_JSON[
        nat
    ], first
    host = stun_lab.hosts[nat]
    if nat is NatType.UDP_BLOCKED:
        assert first["mapped_address"] is None
    else:
        # What the server saw is the router's WAN address (the host's own when public).
        assert first["mapped_address"].rsplit(":", 1)[0] == host.public_address
        assert first["local_address"].rsplit(":", 1)[0] == host.addresses[0]
        assert first["other_address"] is not None  # the server's RFC 5780 second address


@pytest.mark.parametrize("nat", list(NatType), ids=_ids)
def test_discovery_is_stable_over_repeated_runs(
    discoveries: dict[NatType, list[dict[str, Any]]], nat: NatType
) -> None:
    answers = {(r.get("mapping"), r.get("filtering"), r.get("nat_type")) for r in discoveries[nat]}
    assert answers == {EXPECTED_JSON[nat]}, discoveries[nat]


def test_server_announces_two_ips_and_two_ports(stun_lab: StunLab) -> None:
    ips = {address.rsplit(":", 1)[0] for address in stun_lab.alternates}
    ports = {address.rsplit(":", 1)[1] for address in stun_lab.alternates}
    assert ips == set(stun_lab.server.addresses[:2])
    assert len(ports) == 2


@pytest.mark.interop
@pytest.mark.parametrize("nat", list(NatType), ids=_ids)
def test_coturn_client_classifies_through_our_server(
    stun_lab: StunLab, coturn_views: dict[NatType, str], nat: NatType
) -> None:
    """A third-party RFC 5780 client gets the right answer from our server for every NAT."""
    output = coturn_views[nat]
    assert parse_natdiscovery(output) == EXPECTED[nat], summary(output)

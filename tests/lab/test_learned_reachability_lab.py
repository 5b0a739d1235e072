"""Reachability from supernodes found in the DHT, in the netns lab, with `p2pnode run` as is.

Topology: one public host with three addresses runs three `p2pnode run --public`
supernodes (each advertises a STUN server with dial-back in its RELAY_ADVERT);
a second public host and a host behind a port-restricted NAT each run
`p2pnode run` with no `--stun` at all. Both find the three supernodes through
the DHT and ask their dial-back servers: the public one is promoted, the NATed
one is judged behind NAT and stays a client, each saying why.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.netns import Host, Lab, LabError, NatType, read_line
from tests.lab.conftest import require_lab_tools

pytestmark = pytest.mark.lab

WAIT = 90.0  # bound on any one wait, not a speed assertion


def init(home: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "p2pnode", "init", "--home", str(home)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def run_node(host: Host, ip: str, home: Path, *args: str) -> subprocess.Popen[str]:
    init(home)
    log = (home / "stderr.log").open("w")
    return host.popen(
        host.python(
            "-m",
            "p2pnode",
            "run",
            "--home",
            str(home),
            "--listen",
            f"{ip}:0",
            "--relay-listen",
            f"{ip}:0",
            "--allow-peer",
            "203.0.113.0/24",
            "--check-interval",
            "1",
            *args,
        ),
        stderr=log,
    )


def read_until(proc: subprocess.Popen[str], pattern: str, seen: list[str]) -> re.Match[str]:
    deadline = time.monotonic() + WAIT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line matched {pattern!r}: {seen}")
        try:
            line = read_line(proc, timeout=remaining)
        except LabError as error:
            raise AssertionError(f"no line matched {pattern!r}: {seen} ({error})") from None
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@dataclass(frozen=True)
class Outcome:
    supernode_ips: list[str]
    public_ip: str
    public_lines: list[str]
    natted_lines: list[str]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    require_lab_tools()
    homes = tmp_path_factory.mktemp("learned")
    with Lab() as lab:
        supers_host = lab.public_host("supers", addresses=3)
        supers = []
        bootstrap: list[str] = []
        for index, ip in enumerate(supers_host.addresses):
            proc = run_node(supers_host, ip, homes / f"super{index}", "--public", ip, *bootstrap)
            seen: list[str] = []
            listening = read_until(proc, r"^listening on (\S+) \(DHT", seen)
            if not bootstrap:
                bootstrap = ["--bootstrap", listening.group(1)]
            read_until(proc, r"^role: supernode .*dial-back STUN on " + re.escape(ip), seen)
            supers.append(proc)
        # The adverts are put as the role starts; give the last put a moment to land
        # before the newcomers' first search (a miss would only delay them 5 min).
        time.sleep(2.0)

        public = lab.public_host("newcomer")
        natted = lab.private_host("natted", NatType.PORT_RESTRICTED)
        public_proc = run_node(public, public.addresses[0], homes / "public", *bootstrap)
        natted_proc = run_node(natted, natted.addresses[0], homes / "natted", *bootstrap)
        public_lines: list[str] = []
        natted_lines: list[str] = []
        read_until(public_proc, r"^role: supernode ", public_lines)
        read_until(natted_proc, r"^role: client \(reachability behind NAT", natted_lines)
        for proc in (public_proc, natted_proc, *supers):
            stop(proc)
        yield Outcome(list(supers_host.addresses), public.addresses[0], public_lines, natted_lines)


def test_public_newcomer_is_promoted_by_supernodes_it_found(outcome: Outcome) -> None:
    promoted = outcome.public_lines[-1]
    assert "3 of 3 servers voted (0 given, 3 found in the DHT), 3 must agree" in promoted, (
        outcome.public_lines
    )
    assert f"relay on {outcome.public_ip}:" in promoted
    assert f"dial-back STUN on {outcome.public_ip}:" in promoted  # the next judge


def test_natted_newcomer_is_judged_behind_nat_by_them(outcome: Outcome) -> None:
    judged = outcome.natted_lines[-1]
    # 3 supernodes, or 4 once the public newcomer is promoted and advertised too
    assert re.search(
        r"([34]) of \1 servers voted \(0 given, \1 found in the DHT\), 3 must", judged
    ), outcome.natted_lines
    assert not any("relay on" in line for line in outcome.natted_lines)

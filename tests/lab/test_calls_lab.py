"""Calls across the netns NAT lab: each peer is a process behind its own NAT router.

Alice sends 440 Hz and Bob 660 Hz; each records; an FFT of each recording
must find the other side's tone and nothing else dominant. Pairs:

- symmetric <-> symmetric: no hole punch can work, the call must go through
  one of our TURN relays (``p2pnode relay`` on a public lab host);
- full cone <-> port-restricted: ICE with STUN only connects directly;
- symmetric <-> symmetric with 2 % loss and 20 +- 20 ms delay on both access
  links;
- the relay carrying a symmetric <-> symmetric call is killed mid-call: the
  caller re-offers through the second relay and the gap in each recording
  must stay under 3 s.

One lab (two relays, eight NATed hosts) is shared by the module.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.audio import longest_gap, read_wav, spectrum
from tests.harness.netns import PUBLIC_NETWORK, Host, Lab, NatType, read_line
from tests.integration.calls.driver import AgentRun, run_call
from tests.lab.conftest import require_lab_tools

pytestmark = [pytest.mark.lab, pytest.mark.slow]

USERS = {"alice": "wonderland", "bob": "builder"}


@dataclass
class CallLab:
    lab: Lab
    relays: list[tuple[Host, subprocess.Popen[str], int]]
    hosts: dict[str, Host]


def start_relay(relay: Host) -> tuple[subprocess.Popen[str], int]:
    users = [arg for name, password in USERS.items() for arg in ("--user", f"{name}:{password}")]
    process = relay.popen(
        relay.python(
            "-m", "p2pnode", "relay", "--listen", f"{relay.addresses[0]}:0", "--realm", "lab",
            *users, "--allow-peer", PUBLIC_NETWORK,
        )
    )  # fmt: skip
    banner = read_line(process, timeout=20)
    match = re.search(rf"udp {re.escape(relay.addresses[0])}:(\d+)", banner)
    assert match, banner
    return process, int(match.group(1))


@pytest.fixture(scope="module")
def call_lab() -> Iterator[CallLab]:
    require_lab_tools()
    with Lab() as lab:
        relays = []
        for name in ("relay1", "relay2"):
            host = lab.public_host(name)
            process, port = start_relay(host)
            relays.append((host, process, port))
        hosts = {
            "sym-a": lab.private_host("syma", NatType.SYMMETRIC),
            "sym-b": lab.private_host("symb", NatType.SYMMETRIC),
            "cone-a": lab.private_host("conea", NatType.FULL_CONE),
            "port-b": lab.private_host("portb", NatType.PORT_RESTRICTED),
            "lossy-a": lab.private_host("lossya", NatType.SYMMETRIC),
            "lossy-b": lab.private_host("lossyb", NatType.SYMMETRIC),
            "fail-a": lab.private_host("faila", NatType.SYMMETRIC),
            "fail-b": lab.private_host("failb", NatType.SYMMETRIC),
        }
        for name in ("lossy-a", "lossy-b"):
            lab.set_loss(hosts[name], 2.0)
            lab.set_delay(hosts[name], 20.0, 20.0, seed=len(name))
        yield CallLab(lab, relays, hosts)


def relay_path(call_lab: CallLab, index: int, user: str, *, turn: bool = True) -> dict[str, Any]:
    host, _process, port = call_lab.relays[index]
    address = host.addresses[0]
    servers = [[f"stun:{address}:{port}", None, None]]
    if turn:
        servers.append([f"turn:{address}:{port}?transport=udp", user, USERS[user]])
    return {"name": f"relay{index + 1}" if turn else "stun-only", "servers": servers}


def agents(
    tmp_path: Path, paths: dict[str, list[dict[str, Any]]], seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    common = {"seconds": seconds, "codecs": ["opus"], "limit": 60}
    caller = dict(
        common, me="alice", peer="bob", dial=True, tone=440, record=str(tmp_path / "alice.wav"),
        paths=paths["alice"],
    )  # fmt: skip
    callee = dict(
        common, me="bob", peer="alice", dial=False, tone=660, record=str(tmp_path / "bob.wav"),
        paths=paths["bob"],
    )  # fmt: skip
    return caller, callee


def assert_hears(path: Path, tone: float, *, dominance: float = 20.0) -> None:
    samples, rate = read_wav(path)
    assert samples.size > rate, f"{path.name}: {samples.size / rate:.2f} s recorded"
    found = spectrum(samples[int(0.3 * rate) :], rate)
    assert abs(found.dominant_hz - tone) < 5, (path.name, found)
    assert found.dominance > dominance, (path.name, found)


def call(
    call_lab: CallLab,
    pair: tuple[str, str],
    paths: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
    seconds: float = 3.0,
    **kwargs: Any,
) -> tuple[AgentRun, AgentRun]:
    caller, callee = agents(tmp_path, paths, seconds)
    left, right = (call_lab.hosts[name] for name in pair)
    alice, bob = run_call(left.popen, right.popen, caller, callee, **kwargs)
    assert alice.done()["done"] == "hung-up", alice.lines[-5:]
    assert bob.done()["done"] == "hung-up", bob.lines[-5:]
    return alice, bob


def test_symmetric_to_symmetric_call_goes_through_our_relay(
    call_lab: CallLab, tmp_path: Path
) -> None:
    paths = {
        "alice": [relay_path(call_lab, 0, "alice")],
        "bob": [relay_path(call_lab, 0, "bob")],
    }
    alice, _bob = call(call_lab, ("sym-a", "sym-b"), paths, tmp_path)
    first = next(u for u in alice.updates() if u["detail"] == "first audio frame")
    assert first["path"].startswith("relay"), first
    assert_hears(tmp_path / "alice.wav", 660.0)
    assert_hears(tmp_path / "bob.wav", 440.0)


def test_full_cone_to_port_restricted_call_is_direct(call_lab: CallLab, tmp_path: Path) -> None:
    paths = {
        "alice": [relay_path(call_lab, 0, "alice", turn=False)],
        "bob": [relay_path(call_lab, 0, "bob", turn=False)],
    }
    alice, _bob = call(call_lab, ("cone-a", "port-b"), paths, tmp_path)
    first = next(u for u in alice.updates() if u["detail"] == "first audio frame")
    assert first["path"].startswith("direct ("), first
    assert_hears(tmp_path / "alice.wav", 660.0)
    assert_hears(tmp_path / "bob.wav", 440.0)


def test_relayed_call_with_loss_and_jitter_on_both_access_links(
    call_lab: CallLab, tmp_path: Path
) -> None:
    paths = {
        "alice": [relay_path(call_lab, 0, "alice")],
        "bob": [relay_path(call_lab, 0, "bob")],
    }
    call(call_lab, ("lossy-a", "lossy-b"), paths, tmp_path)
    # 2 % loss leaves concealment artefacts: the tone must still dominate clearly
    assert_hears(tmp_path / "alice.wav", 660.0, dominance=10.0)
    assert_hears(tmp_path / "bob.wav", 440.0, dominance=10.0)


def test_relay_killed_mid_call_costs_under_three_seconds(call_lab: CallLab, tmp_path: Path) -> None:
    # A third relay for this test only: killing it leaves the others for other tests.
    spare = call_lab.lab.public_host("relay3")
    process, port = start_relay(spare)
    call_lab.relays.append((spare, process, port))
    doomed = len(call_lab.relays) - 1
    paths = {
        "alice": [relay_path(call_lab, doomed, "alice"), relay_path(call_lab, 1, "alice")],
        "bob": [relay_path(call_lab, doomed, "bob"), relay_path(call_lab, 1, "bob")],
    }

    def kill_relay(caller: AgentRun, _callee: AgentRun) -> None:
        assert caller.first_frame.wait(30), caller.lines
        time.sleep(1.5)
        process.kill()

    alice, bob = call(
        call_lab, ("fail-a", "fail-b"), paths, tmp_path, seconds=7.0, during=kill_relay
    )
    done = alice.done()
    assert done["failovers"] >= 1, alice.describe() + bob.describe()
    # it ends on the second relay
    assert done["generation"] % 2 == 1, alice.describe() + bob.describe()
    for name, tone in (("alice", 660.0), ("bob", 440.0)):
        samples, rate = read_wav(tmp_path / f"{name}.wav")
        gap = longest_gap(samples, rate, skip_start_s=0.3, skip_end_s=0.1)
        assert 0.5 < gap < 3.0, f"{name}: gap {gap:.2f} s"
        found = spectrum(samples[-rate:], rate)  # the last second came through relay2
        assert abs(found.dominant_hz - tone) < 5, found


def test_nat_rebinding_of_the_callee_mid_call_costs_under_three_seconds(
    call_lab: CallLab, tmp_path: Path
) -> None:
    """The callee's symmetric NAT forgets every mapping (conntrack flushed) mid-call.

    Its next packets leave from new ports, the relay no longer knows the
    client, and replies to the old ports are dropped: the caller hears silence,
    re-offers on a fresh connection (same relay), and audio comes back.
    """
    paths = {
        "alice": [relay_path(call_lab, 0, "alice")],
        "bob": [relay_path(call_lab, 0, "bob")],
    }
    router = call_lab.hosts["sym-b"].router_namespace
    assert router is not None

    def rebind(caller: AgentRun, _callee: AgentRun) -> None:
        assert caller.first_frame.wait(30), caller.lines
        time.sleep(1.5)
        subprocess.run(
            ["ip", "netns", "exec", router, "conntrack", "-F"],
            check=True,
            capture_output=True,
            timeout=10,
        )

    alice, _bob = call(call_lab, ("sym-a", "sym-b"), paths, tmp_path, seconds=6.0, during=rebind)
    assert alice.done()["failovers"] >= 1, alice.lines
    for name, tone in (("alice", 660.0), ("bob", 440.0)):
        samples, rate = read_wav(tmp_path / f"{name}.wav")
        gap = longest_gap(samples, rate, skip_start_s=0.3, skip_end_s=0.1)
        assert gap < 3.0, f"{name}: gap {gap:.2f} s"
        found = spectrum(samples[-rate:], rate)
        assert abs(found.dominant_hz - tone) < 5, found

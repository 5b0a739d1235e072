"""`p2pnode nat` and the asyncio runners on loopback: real sockets, real CLI processes.

Loopback is "no NAT" by construction, so the answers are known: our own address
comes back, every server dials us back, filtering is endpoint-independent.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from nat.behaviour import FilteringBehaviour, MappingBehaviour
from nat.endpoint import StunService
from nat.reachability import Reachability
from nat.runner import check_reachability, discover_nat


@pytest.fixture(scope="module")
def stun_servers() -> Iterator[list[str]]:
    """Three CLI STUN servers: an RFC 5780 one (127.0.0.1 + 127.0.0.2), two plain ones."""
    argvs = [
        ["--listen", "127.0.0.1:0", "--alt-ip", "127.0.0.2"],
        ["--listen", "127.0.0.3:0"],
        ["--listen", "127.0.0.4:0"],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "p2pnode", "stun", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for argv in argvs
    ]
    try:
        primaries = []
        for process in processes:
            assert process.stdout is not None
            words = process.stdout.readline().split()
            assert words and words[0] == "listening", words
            primaries.append(words[1])
        yield primaries
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _nat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", "nat", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_nat_json_on_loopback(stun_servers: list[str]) -> None:
    stun_args = [arg for server in stun_servers for arg in ("--stun", server)]
    result = _nat(*stun_args, "--local-ip", "127.0.0.9", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mapping"] == "no_nat"
    assert report["filtering"] == "endpoint_independent"
    assert report["nat_type"] == "none"
    assert report["mapped_address"] == report["local_address"]
    assert report["local_address"].startswith("127.0.0.9:")
    assert report["hairpinning"] is True
    assert report["discovery_server"] == stun_servers[0]
    assert report["other_address"].startswith("127.0.0.2:")
    assert report["reachability"] == "public"
    assert report["reachability_min_agree"] == 3
    assert [s["vote"] for s in report["reachability_servers"]] == ["public"] * 3
    assert all(s["dial_back_received"] for s in report["reachability_servers"])


def test_nat_text_is_for_people(stun_servers: list[str]) -> None:
    # The plain server first: discovery falls back to the RFC 5780 one.
    result = _nat("--stun", stun_servers[1], "--stun", stun_servers[0])
    assert result.returncode == 0, result.stderr
    assert "NAT type:      no NAT (open internet)" in result.stdout
    assert "Reachability:  public" in result.stdout
    assert f"RFC 5780 discovery via {stun_servers[0]}" in result.stdout


def test_nat_unreachable_server_is_udp_blocked_and_bounded() -> None:
    """Nobody listens: the verdict is "UDP blocked" and the run ends by itself."""
    # A port we just had and closed: nothing answers there (ICMP errors are ignored).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _nat("--stun", f"127.0.0.1:{port}", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mapping"] == "udp_blocked"
    assert report["reachability"] == "unknown"


def test_nat_rejects_bad_arguments() -> None:
    result = _nat("--stun", "nonsense")
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr


def test_runners_in_process() -> None:
    async def scenario() -> None:
        async with (
            await StunService.start(("127.0.0.1", 0), alt_ip="127.0.0.2") as rfc5780,
            await StunService.start(("127.0.0.3", 0)) as plain,
        ):
            behaviour = await discover_nat(rfc5780.addresses[0], local_ip="127.0.0.7")
            assert behaviour.mapping is MappingBehaviour.NO_NAT
            assert behaviour.filtering is FilteringBehaviour.ENDPOINT_INDEPENDENT
            report = await check_reachability(
                [rfc5780.addresses[0], plain.addresses[0]], local_ip="127.0.0.7", min_agree=2
            )
            assert report.status is Reachability.PUBLIC
            assert rfc5780.statistics().dial_backs == 1
            assert plain.statistics().dial_backs == 1

    asyncio.run(scenario())


def test_nat_lifetime_option_on_loopback(stun_servers: list[str]) -> None:
    """No NAT: the mapping outlives the longest checkpoint (2 s here)."""
    result = _nat("--stun", stun_servers[0], "--lifetime", "2", "--json")
    assert result.returncode == 0, result.stderr
    lifetime = json.loads(result.stdout)["mapping_lifetime"]
    assert lifetime == {"alive_after": 2.0, "gone_after": None, "checkpoints": [2.0]}
    text = _nat("--stun", stun_servers[0], "--lifetime", "2")
    assert "idle mapping lifetime: more than 2 s" in text.stdout
    assert _nat("--stun", stun_servers[0], "--lifetime", "1000").returncode == 2

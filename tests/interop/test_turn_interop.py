"""coturn's TURN load client (Debian package coturn) against our `p2pnode relay` server.

``turnutils_uclient`` allocates, binds channels (or uses Send/Data indications
with ``-s``) and sends to ``turnutils_peer``, which echoes every packet back
through the relay; it prints how many came back. Our server runs as the real
CLI with a long-term user (and a TURN REST API secret), loopback peers allowed
and RFC 5766 channel numbers accepted (coturn's client binds 0x5000-0x7FFF).
"""

from __future__ import annotations

import base64
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.auth import rest_api_password
from tests.harness.tls import make_certificates
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

SECRET = "interop-secret"  # noqa: S105 (a test secret)
MESSAGES = 40
CLIENTS = 3


@dataclass(frozen=True)
class Relay:
    port: int
    tls_port: int


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    files = make_certificates(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "p2pnode", "relay", "--listen", "127.0.0.1:0", "--realm", "interop"),
            *("--user", "alice:wonderland", "--secret", SECRET),
            *("--allow-peer", "127.0.0.0/8", "--rfc5766-channels"),
            *("--max-per-user", "100", "--max-per-ip", "100"),
            *("--tls-listen", "127.0.0.1:0"),
            *("--tls-cert", str(files.certificate), "--tls-key", str(files.key)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"udp 127\.0\.0\.1:(\d+)", banner)
        tls = re.search(r"tls 127\.0\.0\.1:(\d+)", banner)
        assert match and tls, banner
        yield Relay(int(match.group(1)), int(tls.group(1)))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def echo_peer() -> Iterator[int]:
    tool = require_tool("turnutils_peer", "coturn")
    port = _free_udp_port()
    process = subprocess.Popen(
        [tool, "-L", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.2)  # it binds at start-up; nothing to poll for
    try:
        assert process.poll() is None
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_uclient(relay: Relay, peer_port: int, *extra: str, port: int | None = None) -> str:
    tool = require_tool("turnutils_uclient", "coturn")
    result = subprocess.run(
        [
            tool,
            *("-c", "-n", str(MESSAGES), "-m", str(CLIENTS), "-l", "172", "-z", "1"),
            *("-e", "127.0.0.1", "-r", str(peer_port), "-p", str(port or relay.port)),
            *extra,
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


def assert_every_packet_came_back(output: str) -> None:
    """The final tally (the last of its progress lines) shows no loss."""
    counts = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
    lost = re.findall(r"Total lost packets (\d+) \(([\d.]+)%\)", output)
    assert counts and lost, output
    sent, received = int(counts[-1][0]), int(counts[-1][1])
    assert sent == MESSAGES * CLIENTS, output
    assert received == sent, output
    assert int(lost[-1][0]) == 0, output


@pytest.mark.parametrize(
    "mode",
    [[], ["-t"], ["-s"], ["-t", "-s"]],
    ids=["udp-channels", "tcp-channels", "udp-send-indications", "tcp-send-indications"],
)
def test_uclient_long_term_user(relay: Relay, echo_peer: int, mode: list[str]) -> None:
    output = run_uclient(relay, echo_peer, "-u", "alice", "-w", "wonderland", *mode)
    assert_every_packet_came_back(output)


def test_uclient_over_tls(relay: Relay, echo_peer: int) -> None:
    """coturn's client speaks TURN over TLS (-S -t) to our TLS listener."""
    output = run_uclient(
        relay, echo_peer, "-u", "alice", "-w", "wonderland", "-S", "-t", port=relay.tls_port
    )
    assert_every_packet_came_back(output)


def test_uclient_rest_api_secret(relay: Relay, echo_peer: int) -> None:
    """coturn's own REST API credential code (-W) agrees with ours."""
    output = run_uclient(relay, echo_peer, "-u", "peer-7", "-W", SECRET)
    assert_every_packet_came_back(output)


def test_uclient_wrong_password_gets_nothing_through(relay: Relay, echo_peer: int) -> None:
    output = run_uclient(relay, echo_peer, "-u", "alice", "-w", "wrong")
    assert "Cannot complete Allocation" in output, output
    assert "Total lost packets" not in output, output


def test_rest_api_password_matches_coturns_formula() -> None:
    # base64(HMAC-SHA1("interop-secret", "1700000000:peer-7")), computed independently
    # with: printf %s 1700000000:peer-7 | openssl dgst -sha1 -hmac interop-secret -binary | base64
    openssl = require_tool("openssl")
    username = "1700000000:peer-7"
    result = subprocess.run(
        [openssl, "dgst", "-sha1", "-hmac", SECRET, "-binary"],
        input=username.encode(),
        capture_output=True,
        timeout=10,
        check=True,
    )
    assert rest_api_password(SECRET.encode(), username) == base64.b64encode(result.stdout).decode()

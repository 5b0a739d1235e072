"""coturn's STUN clients (Debian package coturn) against our `p2pnode stun` server.

The server runs as the real CLI with 127.0.0.1 and 127.0.0.2 as its two IPs;
the clients bind other loopback IPs so the reflexive address they print is
checkably theirs, not a constant.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop


@pytest.fixture
def stun_server() -> Iterator[list[tuple[str, int]]]:
    """Our CLI server; yields its four addresses (primary first)."""
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "p2pnode", "stun"),
            *("--listen", "127.0.0.1:0", "--alt-ip", "127.0.0.2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening "), line
        yield [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in line.split()[1:]]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def test_turnutils_stunclient_gets_our_xor_mapped_address(
    stun_server: list[tuple[str, int]],
) -> None:
    tool = require_tool("turnutils_stunclient", "coturn")
    primary = stun_server[0]
    result = subprocess.run(
        [tool, "-L", "127.0.0.5", "-p", str(primary[1]), primary[0]],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Its reflexive address is the IP it bound: our XOR-MAPPED-ADDRESS decoded by coturn.
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.5:\d+", output), output


def test_turnutils_stunclient_rfc5780_mode_sees_the_other_address(
    stun_server: list[tuple[str, int]],
) -> None:
    tool = require_tool("turnutils_stunclient", "coturn")
    primary, _, _, both_changed = stun_server
    result = subprocess.run(
        [tool, "-f", "-L", "127.0.0.5", "-p", str(primary[1]), primary[0]],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Other addr: : {both_changed[0]}:{both_changed[1]}" in output, output
    # The CHANGE-REQUEST answers really came from the alternate address.
    assert f"Response origin: : {both_changed[0]}:{both_changed[1]}" in output, output


def test_turnutils_natdiscovery_classifies_loopback_as_no_nat(
    stun_server: list[tuple[str, int]],
) -> None:
    """Loopback is no NAT: mapping and filtering come out endpoint-independent."""
    tool = require_tool("turnutils_natdiscovery", "coturn")
    primary = stun_server[0]
    local_port = _free_udp_port("127.0.0.6")
    result = subprocess.run(
        [
            tool,
            *("-m", "-f", "-L", "127.0.0.6", "-l", str(local_port)),
            *("-p", str(primary[1]), primary[0]),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert f"UDP reflexive addr: 127.0.0.6:{local_port}" in output, output
    assert "NAT with Endpoint Independent Mapping!" in output, output
    assert "NAT with Endpoint Independent Filtering!" in output, output

"""One `p2pnode run --config` process serving a standalone TURN server and the ENUM DNS
gateway, asked by coturn's ``turnutils_uclient`` (with ``turnutils_peer`` echoing) and by
``dig``; SIGTERM then stops it cleanly (exit 0)."""

from __future__ import annotations

import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.tools import require_tool

pytestmark = [pytest.mark.interop, pytest.mark.slow]  # uclient allocates slowly: ~15 s

WAIT = 60.0  # bound on any one wait, not a speed assertion
MESSAGES, CLIENTS = 20, 2

CONFIG = """
[node]
listen = "127.0.0.1:0"

[supernode]
enabled = false
relay_search = false

[turn]
enabled = true
listen = "127.0.0.1:0"
realm = "interop"
users = ["alice:wonderland"]
allow_peers = ["127.0.0.0/8"]
max_per_user = 100
max_per_ip = 100
rfc5766_channels = true

[relay]
drain_limit = 2.0

[enum]
enabled = true
listen = "127.0.0.1:0"

[control]
enabled = false
"""


def _read_until(process: subprocess.Popen[str], pattern: str, seen: list[str]) -> re.Match[str]:
    assert process.stdout is not None
    deadline = time.monotonic() + WAIT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                continue
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line.rstrip("\n"))
            found = re.search(pattern, line)
            if found:
                return found
    raise AssertionError(f"no line matched {pattern!r}: {seen}")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_turn_and_enum_services_of_one_node_answer_coturn_and_dig(tmp_path: Path) -> None:
    uclient = require_tool("turnutils_uclient", "coturn")
    peer_tool = require_tool("turnutils_peer", "coturn")
    dig = require_tool("dig", "dnsutils")
    home = tmp_path / "node"
    init = subprocess.run(
        [sys.executable, "-m", "p2pnode", "init", "--home", str(home)],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    config = tmp_path / "node.toml"
    config.write_text(CONFIG)
    peer_port = _free_udp_port()
    peer = subprocess.Popen(
        [peer_tool, "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--home", str(home), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seen: list[str] = []
    try:
        turn_port = _read_until(node, r"TURN server \(standalone\) on 127\.0\.0\.1:(\d+)", seen)
        enum_port = _read_until(node, r"ENUM DNS gateway on udp\+tcp 127\.0\.0\.1:(\d+)", seen)
        relayed = subprocess.run(
            [
                uclient,
                *("-c", "-n", str(MESSAGES), "-m", str(CLIENTS), "-l", "172", "-z", "1"),
                *("-e", "127.0.0.1", "-r", str(peer_port), "-p", turn_port.group(1)),
                *("-u", "alice", "-w", "wonderland"),
                "127.0.0.1",
            ],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
        output = relayed.stdout + relayed.stderr
        counts = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
        assert counts, output
        assert int(counts[-1][0]) == MESSAGES * CLIENTS, output
        assert int(counts[-1][1]) == int(counts[-1][0]), output
        answer = subprocess.run(
            [
                dig, "@127.0.0.1", "-p", enum_port.group(1), "+tries=3", "+time=5",
                "-t", "NAPTR", "5.3.9.9.5.3.9.0.0.8.1.e164.arpa",
            ],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
        assert "status: NXDOMAIN" in answer.stdout, answer.stdout  # nobody published it
        assert "SOA" in answer.stdout, answer.stdout  # RFC 2308: the negative answer's SOA
        node.send_signal(signal.SIGTERM)  # drains uclient's leftover allocations for 2 s
        assert node.wait(timeout=WAIT) == 0
    finally:
        for process in (node, peer):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

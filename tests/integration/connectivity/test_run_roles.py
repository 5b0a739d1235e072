"""`p2pnode run` takes the supernode role itself and says why: real processes on loopback.

Three `p2pnode stun` servers dial the node back at its observed address (on
loopback the observed address is the node's own, so the verdict is public);
after three agreeing rounds the node serves STUN + TURN and says so, and another
node finds it through its signed advert in the DHT and health-checks it. Without
servers, or opted out, it stays a client or opted out, and says why.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nat.stun import StunClass, StunMessage, StunMethod, decode_message, encode_message
from nat.stun.attributes import XorMappedAddress

WAIT = 60.0  # bound on any one wait, not a speed assertion


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pnode", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("P2PNODE_HOME", None)
    return env


@contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_until(process: subprocess.Popen[str], pattern: str, seen: list[str]) -> re.Match[str]:
    """Read stdout lines (kept in ``seen``) until one matches; fail with all of them if not."""
    assert process.stdout is not None
    deadline = time.monotonic() + WAIT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0.0)):
                break
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line.rstrip("\n"))
            found = re.search(pattern, line)
            if found:
                return found
    stderr = process.stderr.read() if process.stderr and process.poll() is not None else ""
    raise AssertionError(f"no line matched {pattern!r}; stdout: {seen}; stderr: {stderr}")


def init(home: Path) -> None:
    done = subprocess.run(
        command("init", "--home", str(home)),
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=environment(),
        check=False,
    )
    assert done.returncode == 0, done.stderr


def stun_binding(address: tuple[str, int]) -> tuple[str, int]:
    """One STUN Binding over UDP; returns the XOR-MAPPED-ADDRESS the server saw."""
    request = StunMessage(StunMethod.BINDING, StunClass.REQUEST, os.urandom(12), ())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _ in range(10):
            sock.sendto(encode_message(request), address)
            try:
                data, _ = sock.recvfrom(2048)
            except TimeoutError:
                continue
            answer = decode_message(data)
            assert answer.transaction_id == request.transaction_id
            mapped = answer.get(XorMappedAddress)
            assert mapped is not None
            return mapped.address
    raise AssertionError(f"no STUN answer from {address}")


def test_run_promotes_itself_after_agreeing_dial_backs_and_serves_turn(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init(home)
    servers: list[str] = []
    with (
        running("stun", "--listen", "127.0.0.1:0") as one,
        running("stun", "--listen", "127.0.0.1:0") as two,
        running("stun", "--listen", "127.0.0.1:0") as three,
    ):
        for server in (one, two, three):
            servers.append(read_until(server, r"listening (\S+)", []).group(1))
        stun_args = [arg for server in servers for arg in ("--stun", server)]
        seen: list[str] = []
        with running(
            "run",
            "--home",
            str(home),
            "--listen",
            "127.0.0.1:0",
            *stun_args,
            "--check-interval",
            "0.5",
            "--relay-listen",
            "127.0.0.1:0",
            "--relay-capacity",
            "7",
            "--allow-peer",
            "127.0.0.0/8",
        ) as node:
            read_until(node, r"role: candidate \(reachability verdict: public \(1 of 3", seen)
            promoted = read_until(
                node,
                r"role: supernode \(reachability verdict: public \(3 in a row\): "
                r"3 of 3 servers voted \(3 given, 0 found in the DHT\), 3 must agree\); "
                r"relay on 127\.0\.0\.1:(\d+) udp\+tcp, 0/7 allocations, accepting; "
                r"dial-back STUN on 127\.0\.0\.1:(\d+)",
                seen,
            )
            relay_port = int(promoted.group(1))
            # The dial-back STUN server it advertises answers too.
            assert stun_binding(("127.0.0.1", int(promoted.group(2))))[0] == "127.0.0.1"
            dht_address = next(line.split()[2] for line in seen if line.startswith("listening on "))
            # The relay really serves: a STUN Binding on its port is answered.
            mapped = stun_binding(("127.0.0.1", relay_port))
            assert mapped[0] == "127.0.0.1"
            # Another node finds it through the DHT advert and health-checks it.
            peer_home = tmp_path / "peer"
            init(peer_home)
            peer_seen: list[str] = []
            with running(
                "run",
                "--home",
                str(peer_home),
                "--listen",
                "127.0.0.1:0",
                "--bootstrap",
                dht_address,
            ) as peer:
                found = read_until(
                    peer, r"relays: 127\.0\.0\.1:(\d+) \([0-9.]+ ms, load 0/7\)", peer_seen
                )
                assert int(found.group(1)) == relay_port
            node.send_signal(signal.SIGTERM)
            read_until(node, r"shutting down: role: supernode", seen)
            assert node.wait(timeout=WAIT) == 0
    # Client until the first verdict, candidate while verdicts agree, then supernode.
    roles = [line.split(" (")[0] for line in seen if line.startswith("role:")]
    assert roles == ["role: client", "role: candidate", "role: candidate", "role: supernode"], seen


def test_run_without_stun_servers_stays_a_client_and_says_why(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init(home)
    seen: list[str] = []
    with running(
        "run", "--home", str(home), "--listen", "127.0.0.1:0", "--duration", "1.5"
    ) as node:
        read_until(
            node,
            r"role: client \(reachability unknown: no dial-back STUN servers known yet",
            seen,
        )
        read_until(node, r"shutting down: role: client", seen)
        assert node.wait(timeout=WAIT) == 0
    assert not any("relay on" in line for line in seen), seen


def test_run_opted_out_never_serves_even_when_public(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init(home)
    seen: list[str] = []
    with running(
        "run",
        "--home",
        str(home),
        "--listen",
        "127.0.0.1:0",
        "--public",
        "127.0.0.1",
        "--no-relay",
        "--relay-listen",
        "127.0.0.1:0",
        "--duration",
        "3",
    ) as node:
        read_until(node, r"role: opted out \(operator opted out: --no-relay\)", seen)
        read_until(node, r"shutting down: role: opted out", seen)
        assert node.wait(timeout=WAIT) == 0
    assert not any("relay on" in line for line in seen), seen


def test_run_rejects_bad_role_options_with_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init(home)
    for bad, message in (
        (["--allow-peer", "10.0.0.0/33"], "--allow-peer '10.0.0.0/33' is not an address range"),
        (["--public", "example.org"], "is not an IP address"),
        (["--relay-capacity", "0"], "--relay-capacity must be at least 1"),
        (["--stun-alt-ip", "127.0.0.2"], "--stun-alt-ip needs --serve-stun"),
    ):
        done = subprocess.run(
            command("run", "--home", str(home), "--listen", "127.0.0.1:0", *bad),
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=environment(),
            check=False,
        )
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert message in done.stderr, (bad, done.stderr)

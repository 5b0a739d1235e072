"""TURN relay throughput: coturn's turnserver vs `p2pnode relay` under the same uclient load.

The load: several ``turnutils_uclient`` processes (coturn's own load generator;
one process tops out early, so several), each with many sessions sending
RTP-sized packets (172 bytes) over channels (``-c``: no RTCP allocation) to
``turnutils_peer``, which echoes every packet back through the relay. Each
message crosses the relay twice (client -> peer, peer -> client).

Measured per server, one after the other in the same run:
- pps: relayed packets per second over the load generator's transmit window;
- loss: messages that did not come back, in percent;
- cpu_us_per_packet: server CPU (utime + stime from /proc/<pid>/stat, all
  threads) over the whole load, divided by relayed packets.
``ratio_pps_per_cpu_vs_coturn`` is ours / coturn's packets per CPU-second (the
issue's goal: at least 0.5). coturn runs with one relay thread, like ours.

Bounded: each server run is capped at ``--timeout`` seconds; the default load
takes well under two minutes for both. The last line is one JSON object.

    python benchmarks/relay_throughput.py [--processes 4 --sessions 10 --messages 1000 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD, REALM = "bench", "bench-password", "bench"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    pps: float
    loss: float  # percent
    cpu_us_per_packet: float
    packets: int
    window_s: float
    cpu_s: float
    wall_s: float


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_for_stun(port: int, timeout: float = 10.0) -> None:
    """Poll with a STUN Binding request until the server answers (bounded)."""
    request = bytes.fromhex("000100002112a442") + b"benchmark123"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            sock.sendto(request, ("127.0.0.1", port))
            try:
                sock.recv(2048)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"no STUN answer on port {port}")


def start_coturn() -> tuple[subprocess.Popen[bytes], int]:
    port = free_udp_port()
    process = subprocess.Popen(
        [
            "turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
            "--relay-ip=127.0.0.1", f"--user={USER}:{PASSWORD}", f"--realm={REALM}",
            "--lt-cred-mech", "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
            "--no-tcp-relay", "--min-port=40000", "--max-port=48000", "--relay-threads=1",
            "--log-file=/dev/null", "--simple-log", "--no-stdout-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_stun(port)
    return process, port


def start_ours(
    *, rfc5766_channels: bool = True, profile: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Our relay as a process on loopback; ``profile``: write its cProfile there."""
    profiler = [] if profile is None else ["-m", "cProfile", "-o", profile]
    channels = ["--rfc5766-channels"] if rfc5766_channels else []
    process = subprocess.Popen(
        [
            sys.executable, *profiler, "-m", "p2pnode", "relay", "--listen", "127.0.0.1:0",
            "--realm", REALM, "--user", f"{USER}:{PASSWORD}", "--allow-peer", "127.0.0.0/8",
            *channels, "--max-per-user", "10000", "--max-per-ip", "10000",
            "--max-allocations", "10000", "--ports", "48001-56000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    banner = process.stdout.readline().decode()
    match = re.search(r"udp 127\.0\.0\.1:(\d+)", banner)
    if not match:
        process.kill()
        raise RuntimeError(f"no banner: {banner!r}")
    wait_for_stun(int(match.group(1)))
    return process, int(match.group(1))


def run_load(
    server: subprocess.Popen[bytes], port: int, peer_port: int, args: argparse.Namespace
) -> Result:
    argv = [
        "turnutils_uclient", "-c",
        "-n", str(args.messages), "-m", str(args.sessions), "-l", str(args.length),
        "-z", str(args.interval), "-u", USER, "-w", PASSWORD,
        "-e", "127.0.0.1", "-r", str(peer_port), "-p", str(port), "127.0.0.1",
    ]  # fmt: skip
    cpu_before = cpu_seconds(server.pid)
    started = time.monotonic()
    clients = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(args.processes)
    ]
    outputs = []
    for client in clients:
        try:
            outputs.append(client.communicate(timeout=args.timeout)[0])
        except subprocess.TimeoutExpired:
            client.kill()
            outputs.append(client.communicate()[0])
    wall = time.monotonic() - started
    cpu = cpu_seconds(server.pid) - cpu_before
    sent = received = 0
    window = 0.0
    for output in outputs:
        counts = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
        times = re.findall(r"Total transmit time is (\d+)", output)
        if counts:
            sent += int(counts[-1][0])
            received += int(counts[-1][1])
        if times:
            window = max(window, float(times[-1]))
    expected = args.processes * args.sessions * args.messages
    packets = sent + received  # each sent message crossed the relay once; each echo again
    window = window or wall
    loss = 100.0 * (expected - received) / expected
    return Result(
        pps=packets / window,
        loss=loss,
        cpu_us_per_packet=1e6 * cpu / packets if packets else float("inf"),
        packets=packets,
        window_s=window,
        cpu_s=cpu,
        wall_s=wall,
    )


def measure(kind: str, peer_port: int, args: argparse.Namespace) -> Result:
    server, port = start_coturn() if kind == "coturn" else start_ours()
    try:
        return run_load(server, port, peer_port, args)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=6, help="uclient processes")
    parser.add_argument("--sessions", type=int, default=20, help="sessions per process (-m)")
    parser.add_argument("--messages", type=int, default=600, help="messages per session (-n)")
    parser.add_argument("--interval", type=int, default=1, help="ms between packets (-z)")
    parser.add_argument("--length", type=int, default=172, help="packet bytes (-l)")
    parser.add_argument("--timeout", type=float, default=50.0, help="cap per server run, s")
    args = parser.parse_args()
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer"):
        if not any((Path(d) / tool).exists() for d in os.environ["PATH"].split(os.pathsep)):
            print(f"{tool} missing: apt-get install coturn", file=sys.stderr)
            return 2
    peer_port = free_udp_port()
    peer = subprocess.Popen(
        ["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        results = {kind: measure(kind, peer_port, args) for kind in ("coturn", "p2pnode")}
    finally:
        peer.terminate()
        peer.wait(timeout=10)
    print(
        f"load: {args.processes} uclient processes x {args.sessions} sessions x "
        f"{args.messages} messages of {args.length} B, -z {args.interval} ms, channels on"
    )
    print(f"{'server':<10}{'pps':>10}{'loss %':>9}{'CPU us/pkt':>12}{'packets':>10}"
          f"{'window s':>10}{'CPU s':>8}{'wall s':>8}")  # fmt: skip
    for kind, result in results.items():
        print(
            f"{kind:<10}{result.pps:>10,.0f}{result.loss:>9.2f}{result.cpu_us_per_packet:>12.1f}"
            f"{result.packets:>10}{result.window_s:>10.1f}{result.cpu_s:>8.2f}{result.wall_s:>8.1f}"
        )
    ours, theirs = results["p2pnode"], results["coturn"]
    ratio = theirs.cpu_us_per_packet / ours.cpu_us_per_packet
    print(f"p2pnode / coturn packets per CPU-second: {ratio:.2f} (goal >= 0.5)")
    summary: dict[str, object] = {
        kind: {
            "pps": round(r.pps, 1),
            "loss": round(r.loss, 3),
            "cpu_us_per_packet": round(r.cpu_us_per_packet, 2),
            "packets": r.packets,
            "cpu_s": round(r.cpu_s, 3),
        }
        for kind, r in results.items()
    }
    summary["ratio_pps_per_cpu_vs_coturn"] = round(ratio, 3)
    summary["load"] = vars(args)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

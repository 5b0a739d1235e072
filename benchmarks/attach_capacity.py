"""Home supernode attach capacity: keepalives answered per CPU-second, memory per attached peer.

Two figures, and the anchor from the same run:

- ``bytes_per_attached``: Python heap (tracemalloc) a ``HomeCore`` holds per
  attached peer, after ``--peers`` real attaches (HELLO, CHALLENGE, signed
  ATTACH, verified) fed through the sans-IO core, keepalive buckets included.
- ``keepalives_per_cpu_s``: the real ``SignallingService`` (a public home, its
  own process) answering keepalives from ``--sockets`` attached UDP sockets on
  loopback for ``--seconds``; the server's CPU time comes from /proc/<pid>/stat.
  ``attached_per_core`` = keepalives per CPU-second x the 25 s keepalive
  interval: how many peers one core keeps attached (the goal: 100,000).
- anchor: a plain asyncio UDP echo server (one ``sendto`` per datagram, no
  protocol) under the same load: ``ratio_keepalive_vs_echo``.

Bounded: every phase is capped in count and time; the load keeps at most one
keepalive per socket in flight. Only 127.0.0.1 is used. The last line is one
JSON object. On a shared 2-core machine the figures are indicative.

    python benchmarks/attach_capacity.py [--peers 20000 --sockets 500 --seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import select
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import print_final_json, print_table, ratio  # noqa: E402
from p2pnode.connectivity.attach import HomeConfig, HomeCore, attach_signed_bytes  # noqa: E402
from p2pnode.connectivity.homewire import (  # noqa: E402
    Attach,
    Attached,
    Challenge,
    Code,
    Hello,
    Keepalive,
    decode_message,
    encode_message,
)
from p2pnode.identity import Identity  # noqa: E402

KEEPALIVE_INTERVAL = 25.0
TICKS = os.sysconf("SC_CLK_TCK")
# One host (127.0.0.1) attaches everything here: lift the per-host control rate.
BENCH_HOME = HomeConfig(max_attached=1_000_000, control_rate=1e9, control_burst=1e9)


# -- memory per attached peer (in process, sans-IO) -------------------------------------------


def memory_per_attached(peers: int) -> float:
    now = 1_800_000_000.0
    home_identity = Identity.generate()
    core = HomeCore(
        home_identity.public_key,
        secret=os.urandom(32),
        random=os.urandom,
        now=now,
        config=BENCH_HOME,
    )
    attaches: list[tuple[bytes, tuple[str, int]]] = []
    for index in range(peers):
        identity = Identity.generate()
        address = (
            f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}",
            40000 + index % 20000,
        )
        txid = index.to_bytes(8, "big")
        (reply,) = core.receive(encode_message(Hello(txid)), address, now)
        challenge = decode_message(reply.data)
        assert isinstance(challenge, Challenge)
        signed = attach_signed_bytes(
            home_identity.public_key, challenge.nonce, identity.public_key, 25_000
        )
        message = Attach(txid, identity.public_key, challenge.nonce, 25_000, identity.sign(signed))
        attaches.append((encode_message(message), address))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for data, address in attaches:
        core.receive(data, address, now)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(core) == peers, len(core)
    # The datagrams themselves are ours, not the core's: they were allocated before.
    return (after - before) / peers


# -- servers under load (child processes) ------------------------------------------------------


async def serve_home() -> None:
    from p2pnode.connectivity.signalling import SignallingService
    from p2pnode.dht import DhtNode

    identity = Identity.generate()
    dht = DhtNode(identity)
    await dht.start()
    service = SignallingService(identity, dht, public=True, home_config=BENCH_HOME)
    await service.start()
    print(f"{service.address[1]} {identity.public_key.hex()}", flush=True)
    await _until_stdin_closes()
    await service.stop()
    await dht.close()


async def serve_echo() -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    print(f"{transport.get_extra_info('sockname')[1]} -", flush=True)
    await _until_stdin_closes()
    transport.close()


async def _until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def attach_sockets(port: int, home_key: bytes, count: int) -> list[tuple[socket.socket, bytes]]:
    """``count`` sockets, each attached with its own key; (socket, keepalive datagram)."""
    attached = []
    for index in range(count):
        identity = Identity.generate()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        txid = index.to_bytes(8, "big")
        sock.sendto(encode_message(Hello(txid)), ("127.0.0.1", port))
        challenge = decode_message(sock.recv(2048))
        assert isinstance(challenge, Challenge)
        signed = attach_signed_bytes(home_key, challenge.nonce, identity.public_key, 25_000)
        attach = Attach(txid, identity.public_key, challenge.nonce, 25_000, identity.sign(signed))
        sock.sendto(encode_message(attach), ("127.0.0.1", port))
        answer = decode_message(sock.recv(2048))
        assert isinstance(answer, Attached) and answer.code is Code.OK, answer
        sock.setblocking(False)
        attached.append((sock, encode_message(Keepalive(answer.token))))
    return attached


def blast(
    sockets: list[tuple[socket.socket, bytes]], port: int, seconds: float, window: int = 64
) -> tuple[int, int]:
    """Keepalives from every socket in turn, at most ``window`` in flight (and one per
    socket), for ``seconds``; an answer frees its socket, silence for 0.5 s counts as lost.
    Returns (sent, answered)."""
    poller = select.epoll()
    index_of = {sock.fileno(): i for i, (sock, _) in enumerate(sockets)}
    for fd in index_of:
        poller.register(fd, select.EPOLLIN)
    idle = collections.deque(range(len(sockets)))
    in_flight: dict[int, float] = {}
    sent = answered = 0
    now = time.monotonic()
    deadline = now + seconds
    next_sweep = now + 0.5
    try:
        while now < deadline:
            while idle and len(in_flight) < window:
                i = idle.popleft()
                sock, keepalive = sockets[i]
                sock.sendto(keepalive, ("127.0.0.1", port))
                in_flight[i] = now
                sent += 1
            for fd, _ in poller.poll(0.01):
                i = index_of[fd]
                sock = sockets[i][0]
                while True:
                    try:
                        sock.recv(2048)
                    except BlockingIOError:
                        break
                    answered += 1
                    if in_flight.pop(i, None) is not None:
                        idle.append(i)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 0.5
                for i, at in list(in_flight.items()):
                    if now - at > 0.5:
                        del in_flight[i]
                        idle.append(i)
    finally:
        poller.close()
    return sent, answered


def measure_server(kind: str, sockets: int, seconds: float) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        port_text, key_text = child.stdout.readline().split()
        port = int(port_text)
        if kind == "home":
            attached = attach_sockets(port, bytes.fromhex(key_text), sockets)
        else:
            attached = [
                (_plain_socket(), encode_message(Keepalive(os.urandom(8)))) for _ in range(sockets)
            ]
        blast(attached, port, 0.3)  # warm up
        cpu_before, wall_before = cpu_seconds(child.pid), time.monotonic()
        sent, answered = blast(attached, port, seconds)
        cpu = cpu_seconds(child.pid) - cpu_before
        wall = time.monotonic() - wall_before
        for sock, _ in attached:
            sock.close()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
    return {
        "sent": sent,
        "answered": answered,
        "cpu_s": cpu,
        "wall_s": wall,
        "per_cpu_s": answered / cpu if cpu > 0 else 0.0,
        "per_s": answered / wall,
    }


def _plain_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=20_000, help="attaches for the memory figure")
    parser.add_argument("--sockets", type=int, default=500, help="attached sockets under load")
    parser.add_argument("--seconds", type=float, default=3.0, help="keepalive load per server")
    parser.add_argument("--serve", choices=("home", "echo"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "home":
        asyncio.run(serve_home())
        return
    if args.serve == "echo":
        asyncio.run(serve_echo())
        return
    peers = max(1, min(args.peers, 200_000))
    sockets = max(1, min(args.sockets, 5_000))
    seconds = max(0.5, min(args.seconds, 60.0))

    per_peer = memory_per_attached(peers)
    home = measure_server("home", sockets, seconds)
    echo = measure_server("echo", sockets, seconds)
    attached_per_core = home["per_cpu_s"] * KEEPALIVE_INTERVAL
    rows = [
        [
            "home keepalives",
            f"{home['answered']:.0f}/{home['sent']:.0f}",
            f"{home['per_cpu_s']:.0f}",
            f"{home['per_s']:.0f}",
            f"{home['cpu_s']:.2f}",
        ],
        [
            "echo (anchor)",
            f"{echo['answered']:.0f}/{echo['sent']:.0f}",
            f"{echo['per_cpu_s']:.0f}",
            f"{echo['per_s']:.0f}",
            f"{echo['cpu_s']:.2f}",
        ],
    ]
    print_table(["server", "answered/sent", "per CPU-s", "per s", "server CPU s"], rows)
    print(f"memory: {per_peer:.0f} bytes per attached peer ({peers} attached in a HomeCore)")
    print(f"attached per core at {KEEPALIVE_INTERVAL:.0f} s keepalives: {attached_per_core:,.0f}")
    print_final_json(
        {
            "peers_measured": peers,
            "sockets": sockets,
            "seconds": seconds,
            "bytes_per_attached": round(per_peer, 1),
            "keepalives_per_cpu_s": round(home["per_cpu_s"], 1),
            "keepalive_loss": round(max(0.0, 1 - home["answered"] / home["sent"]), 4)
            if home["sent"]
            else None,
            "attached_per_core": round(attached_per_core),
            "echo_per_cpu_s": round(echo["per_cpu_s"], 1),
            "ratio_keepalive_vs_echo": ratio(home["per_cpu_s"], echo["per_cpu_s"]),
            "memory_mb_at_100k": round(per_peer * 100_000 / 2**20, 1),
        }
    )


if __name__ == "__main__":
    main()

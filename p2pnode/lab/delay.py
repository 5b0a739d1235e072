"""Delay and jitter without ``tc netem``: a tiny NFQUEUE program over raw netlink (stdlib only).

Why: this kernel has no netem and the nft ``queue`` statement is absent, but the
iptables ``NFQUEUE`` target works (LAB-NOTES). The harness puts
``-t raw -j NFQUEUE --queue-num N --queue-bypass`` in a host namespace's
PREROUTING and OUTPUT chains (raw runs before conntrack, so a NAT sees a late
packet as late) and runs this program in that namespace: it holds each packet's
verdict until its release time. Only packet metadata is copied to user space.

    python -m p2pnode.lab.delay QUEUE_NUM DELAY_MS [JITTER_MS] [SEED]

Each packet is released ``DELAY_MS`` plus a uniform random ``[-JITTER_MS,
+JITTER_MS]`` after it arrived (never before it arrived); with jitter, packets
may be reordered, as on a real path with jitter. Prints ``ready`` once bound.
With ``--queue-bypass`` the traffic flows undelayed if this program is gone.
Pure Python handles signalling-sized traffic (about 15k packets/s), not bulk
media. The program exits after ``MAX_RUNTIME`` s whatever happens.
"""

from __future__ import annotations

import heapq
import random
import select
import socket
import struct
import sys
import time

__all__ = ["main"]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
QUEUE_MAXLEN = 4096  # packets the kernel holds for us before dropping
MAX_HELD = 100_000  # verdicts we hold at once (bounded: beyond it, release at once)
MAX_RUNTIME = 900.0  # s
RECV_BUFFER = 8 * 1024 * 1024


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def _message(kind: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    payload = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    header = struct.pack("=IHHII", 16 + len(payload), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0)
    return header + payload


def _check_ack(sock: socket.socket) -> None:
    data = sock.recv(65536)
    _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data)
    if kind == NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", data, 16)
        if error != 0:
            raise OSError(-error, f"nfqueue config refused: errno {-error}")


def _packet_ids(data: bytes) -> list[int]:
    """Packet ids of every NFQNL_MSG_PACKET in one netlink read."""
    ids = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            attr = offset + 20  # after nlmsghdr (16) and nfgenmsg (4)
            end = offset + length
            while attr + 4 <= end:
                attr_len, attr_type = struct.unpack_from("=HH", data, attr)
                if attr_len < 4:
                    break
                if attr_type & 0x3FFF == NFQA_PACKET_HDR:
                    (packet_id,) = struct.unpack_from("!I", data, attr + 4)
                    ids.append(packet_id)
                    break
                attr += (attr_len + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def run(queue: int, delay: float, jitter: float, seed: int | None) -> None:
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
    sock.bind((0, 0))
    bind_cmd = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET)
    sock.send(_message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, bind_cmd), 5))
    _check_ack(sock)
    params = _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
    params += _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
    sock.send(_message(NFQNL_MSG_CONFIG, queue, params, NLM_F_REQUEST | NLM_F_ACK))
    _check_ack(sock)
    print("ready", flush=True)
    held: list[tuple[float, int]] = []
    stop = time.monotonic() + MAX_RUNTIME
    while time.monotonic() < stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _release_at, packet_id = heapq.heappop(held)
            verdict = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
            sock.send(_message(NFQNL_MSG_VERDICT, queue, verdict))
        timeout = max(0.0, held[0][0] - now) if held else 1.0
        ready, _, _ = select.select([sock], [], [], timeout)
        if not ready:
            continue
        try:
            data = sock.recv(RECV_BUFFER)
        except OSError:  # ENOBUFS: the kernel dropped messages; keep serving
            continue
        arrived = time.monotonic()
        for packet_id in _packet_ids(data):
            wait = delay + (rng.uniform(-jitter, jitter) if jitter else 0.0)
            release = arrived if len(held) >= MAX_HELD else arrived + max(0.0, wait)
            heapq.heappush(held, (release, packet_id))


def main(argv: list[str]) -> int:
    if not 2 <= len(argv) <= 4:
        print(__doc__, file=sys.stderr)
        return 2
    queue, delay_ms = int(argv[0]), float(argv[1])
    jitter_ms = float(argv[2]) if len(argv) > 2 else 0.0
    seed = int(argv[3]) if len(argv) > 3 else None
    run(queue, delay_ms / 1000.0, jitter_ms / 1000.0, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Live relayed calls per relay core: `p2pnode relay` vs coturn under the same call load.

A "call" is what a supernode carries when it relays both sides of a call: two
TURN allocations (alice's and bob's), each with a channel bound to the other's
relayed address, and two audio streams, alice -> bob and bob -> alice, each one
172-byte datagram (RTP header + 160 bytes of G.711, 20 ms) every 20 ms. Each
packet crosses the relay twice (client -> allocation A -> allocation B ->
client), so one call is 200 relayed packets per second.

The load generator is a separate process (this file with ``--generator``), so
the relay's process CPU (utime + stime from /proc/<pid>/stat) is the relay's
alone. The calls rise in steps (``--start``, ``--step`` up to ``--max-calls``):
each step sets up the new calls (Allocate with long-term credentials,
ChannelBind both ways), then paces every stream for ``--seconds``, drains for
``--drain`` seconds and counts what came back. The ladder stops at the first
step with any loss, when the relay uses >= ``--saturated`` of a core, or when
the generator cannot keep the 20 ms pacing (then the figure is a floor set by
the generator, and the output says so). The same ladder runs against coturn
(``turnserver``, one relay thread) in the same run.

Bounded: at most ``--max-calls`` calls (2 sockets each on both sides), each
server run capped at ``--timeout`` seconds.

    flock /tmp/bench.lock .venv/bin/python benchmarks/relay_calls.py [--max-calls 1000]

Last line: one JSON object with ``relayed_calls_per_core``,
``coturn_calls_per_core`` and the per-step rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The TURN benchmark's coturn, our relay's start, credentials and process-CPU reader: one copy.
from benchmarks.relay_throughput import (  # noqa: E402
    PASSWORD,
    REALM,
    USER,
    cpu_seconds,
    start_coturn,
    start_ours,
)
from nat.stun import (  # noqa: E402
    Attribute,
    ChannelNumber,
    ErrorCode,
    Nonce,
    Realm,
    RequestedTransport,
    StunClass,
    StunMessage,
    StunMethod,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    decode_message,
    encode_message,
)
from nat.stun.message import long_term_key  # noqa: E402

CORES = os.cpu_count() or 1
PACING_S = 0.020  # one packet per stream every 20 ms
PAYLOAD = 172  # RTP header (12) + 160 bytes of G.711 at 8 kHz, 20 ms
PACKETS_PER_CALL_SECOND = 2 * 50 * 2  # two streams x 50 pps x two relay crossings
CHANNEL = 0x4000
SLOTS = 20  # the 20 ms period is cut into 1 ms slots; streams are spread over them
Address = tuple[str, int]


# ---------------------------------------------------------------- the generator


class TurnError(RuntimeError):
    pass


def _answer(sock: socket.socket, tid: bytes, timeout: float) -> StunMessage | None:
    """The response to ``tid`` within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except TimeoutError:
            return None
        if data[:1] in (b"\x00", b"\x01"):
            response = decode_message(data)
            if response.transaction_id == tid:
                return response
    return None


def _request(
    sock: socket.socket,
    server: Address,
    method: StunMethod,
    attributes: list[Attribute],
    nonce: list[str],
) -> StunMessage:
    """One authenticated request over a blocking socket (asks again after 401/438)."""
    key = long_term_key(USER, REALM, PASSWORD)
    for _ in range(4):
        tid = os.urandom(12)
        extra: list[Attribute] = [Username(USER), Realm(REALM), Nonce(nonce[0])] if nonce else []
        message = StunMessage(method, StunClass.REQUEST, tid, (*attributes, *extra))
        sock.sendto(encode_message(message, integrity_key=key if nonce else None), server)
        response = _answer(sock, tid, 2.0)
        if response is None:
            continue  # retransmit
        error = response.get(ErrorCode)
        got_nonce = response.get(Nonce)
        if error is not None and error.code in (401, 438) and got_nonce is not None:
            nonce[:] = [got_nonce.value]
            continue
        if error is not None:
            raise TurnError(f"{method.name}: {error.code} {error.reason}")
        return response
    raise TurnError(f"{method.name}: no answer")


class Leg:
    """One side of a call: a client socket with an allocation."""

    def __init__(self, server: Address) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.server = server
        self.nonce: list[str] = []
        response = _request(
            self.sock, server, StunMethod.ALLOCATE, [RequestedTransport(17)], self.nonce
        )
        relayed = response.get(XorRelayedAddress)
        if relayed is None:
            raise TurnError("no relayed address")
        self.relayed: Address = relayed.address

    def bind(self, peer: Address) -> None:
        _request(
            self.sock,
            self.server,
            StunMethod.CHANNEL_BIND,
            [ChannelNumber(CHANNEL), XorPeerAddress(peer)],
            self.nonce,
        )
        self.sock.setblocking(False)


def _native_step(
    pacer: str, port: int, legs: list[Leg], seconds: float, drain: float, stdout: IO[str]
) -> tuple[int, int, int, int, float, int]:
    """Pace with the C helper (benchmarks/native/pacer.c) on the legs' sockets."""
    fds = [leg.sock.fileno() for leg in legs]
    argv = [pacer, str(port), str(seconds), str(drain), str(PAYLOAD), *map(str, fds)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, pass_fds=fds) as child:
        assert child.stdout is not None
        stdout.write("GO\n")
        stdout.flush()
        line = child.stdout.readline()  # SENT
        stdout.write(line)
        stdout.flush()
        words = child.stdout.readline().split()
    if len(words) != 6:
        raise TurnError("the pacer failed")
    sent, received, late, slots = (int(word) for word in words[:4])
    return sent, received, late, slots, float(words[4]), int(words[5])


def _python_step(
    server: Address,
    legs: list[Leg],
    poller: select.epoll,
    by_fd: dict[int, socket.socket],
    seconds: float,
    drain: float,
    stdout: IO[str],
) -> tuple[int, int, int, int, float, int]:
    """The same pacing in Python (no C compiler): the generator then limits early."""
    header = struct.pack("!HH", CHANNEL, PAYLOAD)
    packet = header + bytes(PAYLOAD)
    buffer = bytearray(2048)
    # Spread the streams over the 20 ms period, 1 ms slots.
    slots: list[list[socket.socket]] = [[] for _ in range(SLOTS)]
    for index, leg in enumerate(legs):
        slots[index % SLOTS].append(leg.sock)
    stdout.write("GO\n")
    stdout.flush()
    sent = received = late_ticks = 0
    started = time.monotonic()
    end = started + seconds
    tick = 0
    slot_s = PACING_S / SLOTS
    while True:
        due = started + tick * slot_s
        now = time.monotonic()
        if due >= end:
            break
        if now >= due:
            if now - due > PACING_S:
                late_ticks += 1
            for sock in slots[tick % SLOTS]:
                try:
                    sock.sendto(packet, server)
                    sent += 1
                except OSError:
                    pass
            tick += 1
            continue
        for fd, _events in poller.poll(due - now):
            with contextlib.suppress(OSError):
                if by_fd[fd].recv_into(buffer) >= 4:
                    received += 1
    window = time.monotonic() - started
    stdout.write("SENT\n")
    stdout.flush()
    drain_end = time.monotonic() + drain
    while (left := drain_end - time.monotonic()) > 0:
        for fd, _events in poller.poll(left):
            with contextlib.suppress(OSError):
                if by_fd[fd].recv_into(buffer) >= 4:
                    received += 1
    return sent, received, late_ticks, max(1, tick), window, -1


def build_pacer(directory: Path) -> str | None:
    """Compile benchmarks/native/pacer.c into ``directory``; None without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    target = directory / "pacer"
    source = Path(__file__).resolve().parent / "native" / "pacer.c"
    done = subprocess.run(
        [compiler, "-O2", "-o", str(target), str(source)], capture_output=True, check=False
    )
    return str(target) if done.returncode == 0 else None


def generator(server: Address, pacer: str | None, stdin: IO[str], stdout: IO[str]) -> int:
    """Steps driven by the parent: 'STEP calls seconds drain' -> one JSON line per step."""
    legs: list[Leg] = []
    poller = select.epoll()
    by_fd: dict[int, socket.socket] = {}
    for line in stdin:
        words = line.split()
        if not words or words[0] != "STEP":
            break
        calls, seconds, drain = int(words[1]), float(words[2]), float(words[3])
        setup_started = time.monotonic()
        try:
            while len(legs) < 2 * calls:
                alice, bob = Leg(server), Leg(server)
                alice.bind(bob.relayed)
                bob.bind(alice.relayed)
                for leg in (alice, bob):
                    legs.append(leg)
                    by_fd[leg.sock.fileno()] = leg.sock
                    poller.register(leg.sock.fileno(), select.EPOLLIN)
        except (TurnError, OSError) as error:
            stdout.write(f"set-up failed: {error}\n")
            stdout.flush()
            return 1
        setup_s = time.monotonic() - setup_started
        if pacer is not None:
            result = _native_step(pacer, server[1], legs, seconds, drain, stdout)
        else:
            result = _python_step(server, legs, poller, by_fd, seconds, drain, stdout)
        sent, received, late_ticks, ticks, window, silent = result
        stdout.write(
            json.dumps(
                {
                    "calls": calls,
                    "sent": sent,
                    "received": received,
                    "window_s": window,
                    "setup_s": setup_s,
                    "late_tick_fraction": late_ticks / ticks,
                    "silent_legs": silent,
                }
            )
            + "\n"
        )
        stdout.flush()
    for leg in legs:
        leg.sock.close()
    return 0


# ---------------------------------------------------------------- the parent


@dataclass(frozen=True)
class Step:
    calls: int
    sent: int
    received: int
    loss_percent: float
    relay_cpu_fraction: float  # of one core, over the pacing window
    pacing_kept: bool  # at most --late of the 1 ms send slots went out over 20 ms late
    setup_s: float
    silent_legs: int  # client sockets that got nothing back (-1: not counted)
    host_busy_cores: float  # every process's CPU over the pacing window, in cores
    rcvbuf_errors: int  # the host's UdpRcvbufErrors over the step (any process's sockets)


@dataclass(frozen=True)
class Ladder:
    server: str
    steps: tuple[Step, ...]
    stopped_by: str
    calls_at_zero_loss: int  # the largest step with 0 % loss and pacing kept
    cpu_at_that_step: float


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host (/proc/stat 'cpu' line)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def rcvbuf_errors() -> int:
    """The host's UDP receive-buffer overflows so far (/proc/net/snmp, all sockets)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    udp = [line for line in lines if line and line[0] == "Udp:"]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return 0
    return int(udp[1][udp[0].index("RcvbufErrors")])


def ladder(kind: str, args: argparse.Namespace, pacer: str | None) -> Ladder:
    server, port = (
        start_coturn()
        if kind == "coturn"
        else start_ours(rfc5766_channels=False, profile=args.profile)
    )
    load = subprocess.Popen(
        [sys.executable, __file__, "--generator", str(port)]
        + ([] if pacer is None else ["--pacer", pacer]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert load.stdin is not None and load.stdout is not None
    steps: list[Step] = []
    stopped_by = f"the ladder's top ({args.max_calls} calls)"
    deadline = time.monotonic() + args.timeout
    try:
        calls = args.start
        while calls <= args.max_calls:
            if time.monotonic() > deadline:
                stopped_by = f"the time cap ({args.timeout:.0f} s)"
                break
            load.stdin.write(f"STEP {calls} {args.seconds} {args.drain}\n")
            load.stdin.flush()
            line = load.stdout.readline()
            if line.strip() != "GO":
                stopped_by = f"set-up failed: {line.strip()[:120]}"
                break
            cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
            rcvbuf0, host0 = rcvbuf_errors(), host_cpu()
            line = load.stdout.readline()  # SENT
            cpu1, wall1, host1 = cpu_seconds(server.pid), time.monotonic(), host_cpu()
            report = json.loads(load.stdout.readline())
            sent, received = int(report["sent"]), int(report["received"])
            step = Step(
                calls=calls,
                sent=sent,
                received=received,
                loss_percent=100.0 * (sent - received) / sent if sent else 100.0,
                relay_cpu_fraction=(cpu1 - cpu0) / (wall1 - wall0),
                pacing_kept=float(report["late_tick_fraction"]) <= args.late,
                setup_s=float(report["setup_s"]),
                silent_legs=int(report["silent_legs"]),
                rcvbuf_errors=rcvbuf_errors() - rcvbuf0,
                host_busy_cores=(host1[0] - host0[0]) / (host1[1] - host0[1]) * CORES,
            )
            steps.append(step)
            print(
                f"  {kind:<8} {calls:>5} calls  sent {sent:>7}  lost {sent - received:>5} "
                f"({step.loss_percent:.3f} %)  relay CPU {step.relay_cpu_fraction:.2f} core  "
                f"silent legs {step.silent_legs}  host rcvbuf drops {step.rcvbuf_errors}  "
                f"host busy {step.host_busy_cores:.2f} of {CORES} cores"
                f"{'' if step.pacing_kept else '  (generator behind its pacing)'}",
                file=sys.stderr,
            )
            if sent != received:
                stopped_by = "loss"
                break
            if not step.pacing_kept:
                stopped_by = "the load generator (could not keep 20 ms pacing)"
                break
            if step.relay_cpu_fraction >= args.saturated:
                stopped_by = "the relay's core saturated"
                break
            calls += args.step
    finally:
        load.stdin.close()
        try:
            load.wait(timeout=20)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    good = [s for s in steps if s.sent == s.received and s.pacing_kept]
    best = good[-1] if good else None
    return Ladder(
        server=kind,
        steps=tuple(steps),
        stopped_by=stopped_by,
        calls_at_zero_loss=best.calls if best else 0,
        cpu_at_that_step=best.relay_cpu_fraction if best else 0.0,
    )


def per_core(result: Ladder) -> float | None:
    """Calls one whole core would carry at the CPU per call measured at the best step."""
    if not result.calls_at_zero_loss or result.cpu_at_that_step <= 0:
        return None
    return result.calls_at_zero_loss / result.cpu_at_that_step


def us_per_packet(result: Ladder) -> float | None:
    """The relay's CPU per relayed packet at the best step, in microseconds."""
    if not result.calls_at_zero_loss:
        return None
    packets_per_second = result.calls_at_zero_loss * PACKETS_PER_CALL_SECOND
    return round(1e6 * result.cpu_at_that_step / packets_per_second, 2)


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Both ladders, coturn first; the summary ``benchmarks/calls.py`` embeds too."""
    with tempfile.TemporaryDirectory() as tmp:
        pacer = None if args.python_pacer else build_pacer(Path(tmp))
        kinds = ("p2pnode",) if args.profile else ("coturn", "p2pnode")
        results = {kind: ladder(kind, args, pacer) for kind in kinds}
    if args.profile:  # a profiling run: ours only, no comparison
        return {"profile": args.profile, "steps": [asdict(s) for s in results["p2pnode"].steps]}
    ours, theirs = results["p2pnode"], results["coturn"]
    return {
        "relayed_calls_per_core": ours.calls_at_zero_loss,
        "coturn_calls_per_core": theirs.calls_at_zero_loss,
        "relay_cpu_at_best_step": round(ours.cpu_at_that_step, 3),
        "coturn_cpu_at_best_step": round(theirs.cpu_at_that_step, 3),
        "relayed_calls_per_core_by_cpu": per_core(ours) and round(per_core(ours) or 0, 1),
        "coturn_calls_per_core_by_cpu": per_core(theirs) and round(per_core(theirs) or 0, 1),
        "relay_cpu_us_per_packet": us_per_packet(ours),
        "coturn_cpu_us_per_packet": us_per_packet(theirs),
        "relay_stopped_by": ours.stopped_by,
        "coturn_stopped_by": theirs.stopped_by,
        "generator": "python" if pacer is None else "c",
        "steps": {kind: [asdict(s) for s in r.steps] for kind, r in results.items()},
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=100, help="calls in the first step")
    parser.add_argument("--step", type=int, default=100, help="calls added per step")
    parser.add_argument("--max-calls", type=int, default=1000, help="the ladder's top")
    parser.add_argument("--seconds", type=float, default=3.0, help="paced traffic per step")
    parser.add_argument("--drain", type=float, default=0.5, help="wait for stragglers, s")
    parser.add_argument("--saturated", type=float, default=0.95, help="core fraction = full")
    parser.add_argument(
        "--late", type=float, default=0.05, help="fraction of send slots allowed 20 ms late"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="cap per server run, s")
    parser.add_argument(
        "--profile", metavar="FILE", help="run only ours, under cProfile, stats to FILE"
    )
    parser.add_argument("--generator", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pacer", help=argparse.SUPPRESS)
    parser.add_argument(
        "--python-pacer", action="store_true", help="pace in Python even if cc exists"
    )
    args = parser.parse_args(argv)
    args.max_calls = max(1, min(args.max_calls, 4000))  # 2 sockets per leg pair: fd bound
    return args


def main() -> int:
    args = parse()
    if args.generator is not None:
        return generator(("127.0.0.1", args.generator), args.pacer, sys.stdin, sys.stdout)
    if not any((Path(d) / "turnserver").exists() for d in os.environ["PATH"].split(os.pathsep)):
        print("turnserver missing: apt-get install coturn", file=sys.stderr)
        return 2
    summary = measure(args)
    if args.profile:
        print(json.dumps(summary))
        return 0
    print(
        f"relayed calls (2 allocations, 2 x 50 pps of {PAYLOAD} B each; "
        f"{PACKETS_PER_CALL_SECOND} relayed packets/s per call); 2 shared cores, indicative"
    )
    print(f"{'server':<10}{'calls @0 % loss':>16}{'relay CPU':>11}{'calls/core by CPU':>19}"
          "  stopped by")  # fmt: skip
    for kind, key in (("coturn", "coturn"), ("p2pnode", "relayed")):
        cpu_key = "coturn_cpu_at_best_step" if kind == "coturn" else "relay_cpu_at_best_step"
        by_cpu = summary[f"{key}_calls_per_core_by_cpu"]
        stopped = summary["coturn_stopped_by" if kind == "coturn" else "relay_stopped_by"]
        print(
            f"{kind:<10}{summary[f'{key}_calls_per_core']!s:>16}{summary[cpu_key]!s:>11}"
            f"{by_cpu!s:>19}  {stopped}"
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

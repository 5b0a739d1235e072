"""Call set-up time (dial -> first audio frame received), direct and relayed, and failover gap.

In the netns lab (root): a public host runs two `p2pnode relay`s; a full-cone
and a port-restricted host make the direct pair, two symmetric-NAT hosts the
relayed pair; every access link gets rtt/4 of one-way delay, so peer-to-peer
(and peer-relay-peer) round trips are ``--rtt-ms``. The floor is 2 RTT (one
for the offer/answer, one for ICE + DTLS at best). The anchor, measured in the
same run on the same direct pair, is plain aiortc with the SDP carried over
the same pipe (no call service, no state machine, no signal codec).

Each call is two fresh processes (tests/integration/calls/agent.py), so a
figure includes nothing of process start-up: the clock starts just before the
dial (for the -warm rows: after both sides have gathered a connection ahead
of the call, ``CallConfig.warm``). The failover figure kills the relay carrying one relayed call and
measures the longest silence in both recordings.

Relayed calls per core (ours and coturn's) are counted live by
benchmarks/relay_calls.py: N concurrent calls, each two TURN allocations with
channels bound to each other's relayed address and two audio streams (172-byte
datagrams every 20 ms each way; 200 relayed packets per second per call), N
rising by 100 until a packet is lost or the relay's core saturates, from a
load generator in a separate process (the relay's CPU is its own). Synthetic
RTP-sized datagrams, not aiortc calls (two cores cannot run 500 aiortc calls).

    flock /tmp/bench.lock .venv/bin/python benchmarks/calls.py --calls 10
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import percentile, print_final_json, print_table, ratio  # noqa: E402

from tests.harness.audio import longest_gap, read_wav  # noqa: E402
from tests.harness.netns import PUBLIC_NETWORK, Host, Lab, NatType, read_line  # noqa: E402
from tests.integration.calls.driver import AgentRun, run_call  # noqa: E402

USERS = {"alice": "wonderland", "bob": "builder"}


def start_relay(host: Host) -> tuple[Any, int]:
    users = [arg for name, password in USERS.items() for arg in ("--user", f"{name}:{password}")]
    process = host.popen(
        host.python(
            "-m", "p2pnode", "relay", "--listen", f"{host.addresses[0]}:0", "--realm", "bench",
            *users, "--allow-peer", PUBLIC_NETWORK,
        )
    )  # fmt: skip
    banner = read_line(process, timeout=20)
    match = re.search(rf"udp {re.escape(host.addresses[0])}:(\d+)", banner)
    if not match:
        raise RuntimeError(f"relay did not start: {banner}")
    return process, int(match.group(1))


def path(host: Host, port: int, user: str, *, turn: bool, name: str) -> dict[str, Any]:
    address = host.addresses[0]
    servers: list[list[str | None]] = [[f"stun:{address}:{port}", None, None]]
    if turn:
        servers.append([f"turn:{address}:{port}?transport=udp", user, USERS[user]])
    return {"name": name, "servers": servers}


def one_call(
    left: Host,
    right: Host,
    paths: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    workdir: Path,
    *,
    plain: bool = False,
    warm: bool = False,
    seconds: float = 0.3,
    during: Any = None,
) -> tuple[AgentRun, AgentRun]:
    common = {"seconds": seconds, "codecs": ["opus"], "limit": 60, "plain": plain, "warm": warm}
    caller = dict(
        common, me="alice", peer="bob", dial=True, tone=440,
        record=str(workdir / "alice.wav"), paths=paths[0],
    )  # fmt: skip
    callee = dict(
        common, me="bob", peer="alice", dial=False, tone=660,
        record=str(workdir / "bob.wav"), paths=paths[1],
    )  # fmt: skip
    return run_call(left.popen, right.popen, caller, callee, during=during)


def setup_ms(run: AgentRun) -> float | None:
    value = run.done().get("setup_s")
    return None if value is None else float(value) * 1000.0


def relay_capacity() -> dict[str, Any] | None:
    """Live relayed calls per relay core, ours and coturn's: benchmarks/relay_calls.py
    (two allocations + channels per call, 2 x 50 pps of 172 B, rising N until loss or a
    saturated core; its load generator is a separate process)."""
    command = [
        sys.executable, str(ROOT / "benchmarks" / "relay_calls.py"),
        "--start", "100", "--step", "100", "--max-calls", "1000", "--seconds", "3",
        "--timeout", "120",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as error:
        print(f"relay capacity not measured: {error.__class__.__name__}", file=sys.stderr)
        return None
    if "relayed_calls_per_core" not in report:
        print("relay capacity not measured: relay_calls.py failed", file=sys.stderr)
        return None
    print(
        f"relayed calls at 0 % loss: p2pnode {report['relayed_calls_per_core']} "
        f"({report['relay_cpu_at_best_step']} core, stopped by {report['relay_stopped_by']}), "
        f"coturn {report['coturn_calls_per_core']} ({report['coturn_cpu_at_best_step']} core, "
        f"stopped by {report['coturn_stopped_by']})"
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="calls per configuration")
    parser.add_argument("--rtt-ms", type=float, default=40.0, help="peer-to-peer round trip")
    parser.add_argument("--no-failover", action="store_true", help="skip the failover call")
    parser.add_argument(
        "--no-relay-capacity", action="store_true", help="skip relayed calls per core"
    )
    args = parser.parse_args()
    calls = max(1, min(args.calls, 200))
    one_way_link = args.rtt_ms / 4.0

    results: dict[str, list[float]] = {
        "direct": [],
        "direct-warm": [],
        "relayed": [],
        "relayed-warm": [],
        "aiortc-pipe": [],
    }
    errors: dict[str, int] = {key: 0 for key in results}
    gap: float | None = None
    with Lab() as lab, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        relay_host = lab.public_host("relay", addresses=2)
        relay_a, port_a = start_relay(relay_host)
        spare = lab.public_host("spare")
        relay_b, port_b = start_relay(spare)
        hosts = {
            "cone": lab.private_host("cone", NatType.FULL_CONE),
            "port": lab.private_host("port", NatType.PORT_RESTRICTED),
            "syma": lab.private_host("syma", NatType.SYMMETRIC),
            "symb": lab.private_host("symb", NatType.SYMMETRIC),
        }
        if one_way_link > 0:
            for host in hosts.values():
                lab.set_delay(host, one_way_link)
        direct = (
            [path(relay_host, port_a, "alice", turn=False, name="stun")],
            [path(relay_host, port_a, "bob", turn=False, name="stun")],
        )
        relayed = (
            [path(relay_host, port_a, "alice", turn=True, name="relay1")],
            [path(relay_host, port_a, "bob", turn=True, name="relay1")],
        )
        plan = [
            ("direct", hosts["cone"], hosts["port"], direct, False, False),
            ("direct-warm", hosts["cone"], hosts["port"], direct, False, True),
            ("aiortc-pipe", hosts["cone"], hosts["port"], direct, True, False),
            ("relayed", hosts["syma"], hosts["symb"], relayed, False, False),
            ("relayed-warm", hosts["syma"], hosts["symb"], relayed, False, True),
        ]
        for _ in range(calls):  # interleaved, so drift in machine load hits all alike
            for name, left, right, paths, plain, warm in plan:
                try:
                    caller, _callee = one_call(left, right, paths, workdir, plain=plain, warm=warm)
                    value = setup_ms(caller)
                except (AssertionError, OSError, ValueError, RuntimeError) as error:
                    print(f"{name}: call failed: {str(error)[:200]}", file=sys.stderr)
                    errors[name] += 1
                    continue
                if value is None:
                    errors[name] += 1
                else:
                    results[name].append(value)
        if not args.no_failover:
            failover_paths = (
                [
                    path(spare, port_b, "alice", turn=True, name="relay-b"),
                    path(relay_host, port_a, "alice", turn=True, name="relay-a"),
                ],
                [
                    path(spare, port_b, "bob", turn=True, name="relay-b"),
                    path(relay_host, port_a, "bob", turn=True, name="relay-a"),
                ],
            )

            def kill_relay(caller: AgentRun, _callee: AgentRun) -> None:
                if caller.first_frame.wait(30):
                    time.sleep(1.5)
                    relay_b.kill()

            try:
                one_call(
                    hosts["syma"],
                    hosts["symb"],
                    failover_paths,
                    workdir,
                    seconds=6.0,
                    during=kill_relay,
                )
                gaps = []
                for name in ("alice", "bob"):
                    samples, rate = read_wav(workdir / f"{name}.wav")
                    gaps.append(longest_gap(samples, rate, skip_start_s=0.3, skip_end_s=0.1))
                gap = max(gaps)
            except (AssertionError, OSError, ValueError) as error:
                print(f"failover: call failed: {str(error)[:200]}", file=sys.stderr)
        relay_a.kill()

    capacity = None if args.no_relay_capacity else relay_capacity()

    floor = 2.0 * args.rtt_ms
    rows = []
    for name, values in results.items():
        p50 = percentile(values, 50)
        rows.append(
            [name, len(values), errors[name], p50, percentile(values, 95), ratio(p50, floor)]
        )
    print(f"lab RTT {args.rtt_ms:.0f} ms peer to peer; floor (2 RTT) {floor:.0f} ms; "
          "2 shared cores, figures indicative")  # fmt: skip
    print_table(
        ["setup (dial->first frame)", "calls", "failed", "p50 ms", "p95 ms", "x floor"], rows
    )
    print(f"failover gap (relay killed mid-call, longest silence in either recording): {gap}")
    direct_p50 = percentile(results["direct"], 50)
    pipe_p50 = percentile(results["aiortc-pipe"], 50)
    print_final_json(
        {
            "rtt_ms": args.rtt_ms,
            "calls": calls,
            "setup_p50_ms": direct_p50,
            "setup_p95_ms": percentile(results["direct"], 95),
            "relayed_setup_p50_ms": percentile(results["relayed"], 50),
            "relayed_setup_p95_ms": percentile(results["relayed"], 95),
            "warm_setup_p50_ms": percentile(results["direct-warm"], 50),
            "warm_setup_p95_ms": percentile(results["direct-warm"], 95),
            "warm_relayed_setup_p50_ms": percentile(results["relayed-warm"], 50),
            "warm_relayed_setup_p95_ms": percentile(results["relayed-warm"], 95),
            "floor_ms": floor,
            "ratio_setup_p50_vs_floor": ratio(direct_p50, floor),
            "ratio_relayed_setup_p50_vs_floor": ratio(percentile(results["relayed"], 50), floor),
            "aiortc_pipe_setup_p50_ms": pipe_p50,
            "aiortc_pipe_setup_p95_ms": percentile(results["aiortc-pipe"], 95),
            "ratio_setup_p50_vs_aiortc_pipe": ratio(direct_p50, pipe_p50),
            "failed_calls": sum(errors.values()),
            "relayed_calls_per_core": capacity and capacity["relayed_calls_per_core"],
            "coturn_calls_per_core": capacity and capacity["coturn_calls_per_core"],
            "relayed_calls_per_core_by_cpu": capacity and capacity["relayed_calls_per_core_by_cpu"],
            "coturn_calls_per_core_by_cpu": capacity and capacity["coturn_calls_per_core_by_cpu"],
            "relay_cpu_us_per_packet": capacity and capacity["relay_cpu_us_per_packet"],
            "coturn_cpu_us_per_packet": capacity and capacity["coturn_cpu_us_per_packet"],
            "relay_capacity_loss_percent": capacity and 0.0,  # the figures are at 0 % loss
            "failover_gap_s": gap,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PeerLink set-up time across every NAT pair of the lab, at 40 ms RTT, against plain aiortc.

The lab (tests/harness/lab_reach.py, needs root): three relay supernodes
(``p2pnode relay``: STUN + TURN over UDP and TCP) and two peers per NAT type
{public, full cone, address-restricted, port-restricted, symmetric, UDP
blocked}, each behind its own router; every peer's link delays each packet
``--delay-ms`` each way (default 10: 40 ms peer-to-peer RTT, 20 ms to a
supernode). The 21 unordered NAT-type pairs are dialled ``--rounds`` times, in
batches of ``--batch`` links at once (2 shared cores: fewer at once, less CPU
queueing in the figures).

Signalling is a pipe through this process, each signal held one peer-to-
supernode RTT (``2 * delay``: the hop through the recipient's home supernode
that sealed signalling will take), so an offer/answer exchange costs one
peer-to-peer RTT, as it would on the network.

Figures (same run, same links):
- ours: PeerLink (negotiated data channel, max-bundle, answerers' connections
  gathered ahead, ice_tuning) — set-up = first offer sent -> data channel open
  at the dialer, p50/p95 overall and per path class (direct / relayed), the
  share of pairs that went direct, ping RTT over the open link;
- with ``--unprepared``: PeerLink again, answerers gathering only after the offer
  arrives (what the spare connections save);
- anchor 1: plain aiortc (in-band data channel, default bundle policy, gathering
  after the offer arrives, no tuning), SDP through the same pipe, same servers;
- anchor 2: the floor, 2 RTT (one offer/answer exchange + one connectivity check);
- the 500 ms stall: relay-only links on loopback through our relay, one after
  another, with and without ice_tuning (each in a fresh process), p50/p95 and
  the share over 400 ms (aiortc's first retransmission is at 500 ms).

    flock /tmp/bench.lock .venv/bin/python benchmarks/connect.py [--rounds 3 --batch 7]

The last line is one JSON object. Bounded: every dial round has a timeout, the
lab is torn down on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import percentile, print_final_json, print_table, ratio  # noqa: E402
from tests.harness.lab_reach import (  # noqa: E402
    SHORT,
    PairResult,
    ReachLab,
    all_pairs,
    expected_direct,
)
from tests.harness.netns import Lab  # noqa: E402

ROUND_TIMEOUT = 60.0
LOOPBACK_TIMEOUT = 120.0


async def _loopback_links(tuned: bool, count: int) -> list[float]:
    """Relay-only set-ups on loopback through our relay, one after another (ms each)."""
    import random

    from p2pnode.connectivity.credentials import TurnCredentials
    from p2pnode.connectivity.ice_servers import IcePlan
    from p2pnode.connectivity.peerlink import LinkConfig, PeerLink
    from relay.auth import rest_api_credentials, rest_api_password, rest_api_username
    from relay.policy import PeerAddressPolicy, parse_networks
    from relay.server import TurnConfig, TurnServer
    from relay.service import RelayService
    from tests.harness.signal_pipe import MemoryHub, MemorySignalling

    loop = asyncio.get_running_loop()
    secret = b"bench"
    turn = TurnConfig(
        realm="bench",
        credentials=rest_api_credentials(secret),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    service = RelayService(
        TurnServer(turn, random.Random(), loop.time()), udp=[("127.0.0.1", 0)], tcp=[]
    )
    relay = (await service.start()).udp[0]

    def config(peer: str) -> LinkConfig:
        expires = int(time.time()) + 600
        user = rest_api_username(expires, peer)
        creds = TurnCredentials(user, rest_api_password(secret, user), "bench", expires)
        plan = IcePlan(stun=relay, turn=relay, credentials=creds, relay_id="bench")
        return LinkConfig(ice=plan, relay_only=True, early_check_retransmit=tuned)

    setups = []
    try:
        for _ in range(count):
            hub = MemoryHub()
            alice, bob = hub.endpoint("alice"), hub.endpoint("bob")

            async def answer(bob: MemorySignalling) -> PeerLink:
                return await PeerLink.answer(await bob.receive(), bob, config("bob"))

            async with asyncio.TaskGroup() as group:
                answering = group.create_task(answer(bob))
                link = await PeerLink.dial("bob", alice, config("alice"))
            setups.append(link.timings.setup_ms)
            await link.close()
            await answering.result().close()
    finally:
        service.close()
    return setups


def loopback_series(tuned: bool, count: int) -> list[float]:
    """Run ``_loopback_links`` in a fresh process: ice_tuning's wrapping is process-wide."""
    command = [sys.executable, __file__, "--loopback-worker", "tuned" if tuned else "untuned"]
    command += ["--loopback-links", str(count)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=LOOPBACK_TIMEOUT, check=False
    )
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return []
    values: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return values


def measure(
    reach: ReachLab,
    *,
    plain: bool,
    rounds: int,
    batch: int,
    signal_delay: float,
    prepare: bool = True,
) -> list[PairResult]:
    pairs = all_pairs()
    results: list[PairResult] = []
    reach.start_agents(plain=plain)
    try:
        for _ in range(rounds):
            for start in range(0, len(pairs), batch):
                chunk = pairs[start : start + batch]
                got = reach.dial(
                    chunk, signal_delay=signal_delay, timeout=ROUND_TIMEOUT, prepare=prepare
                )
                results.extend(got[pair] for pair in chunk)
    finally:
        reach.stop_agents()
    return results


def setups(results: list[PairResult], direct: bool | None = None) -> list[float]:
    return [
        r.setup_ms
        for r in results
        if r.opened and r.setup_ms is not None and (direct is None or r.direct is direct)
    ]


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="dials of each of the 21 pairs")
    parser.add_argument("--batch", type=int, default=7, help="links dialled at once")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="each way, per peer link")
    parser.add_argument("--no-anchor", action="store_true", help="skip plain aiortc")
    parser.add_argument(
        "--unprepared",
        action="store_true",
        help="also PeerLink without answerers' spare connections (gathering after the offer)",
    )
    parser.add_argument("--loopback-links", type=int, default=30, help="relay-only, each way")
    parser.add_argument("--loopback-worker", choices=["tuned", "untuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loopback_worker:
        tuned = args.loopback_worker == "tuned"
        print(json.dumps(asyncio.run(_loopback_links(tuned, args.loopback_links))))
        return 0
    if os.geteuid() != 0:
        print("benchmarks/connect.py builds the netns lab: run it as root", file=sys.stderr)
        return 2
    rtt_ms = 4 * args.delay_ms
    floor_ms = 2 * rtt_ms
    signal_delay = 2 * args.delay_ms / 1000.0
    started = time.monotonic()
    with Lab() as lab:
        reach = ReachLab(lab, delay_ms=args.delay_ms)
        ours = measure(
            reach, plain=False, rounds=args.rounds, batch=args.batch, signal_delay=signal_delay
        )
        unprepared: list[PairResult] = []
        if args.unprepared:
            unprepared = measure(
                reach,
                plain=False,
                rounds=args.rounds,
                batch=args.batch,
                signal_delay=signal_delay,
                prepare=False,
            )
        anchor: list[PairResult] = []
        if not args.no_anchor:
            anchor = measure(
                reach, plain=True, rounds=args.rounds, batch=args.batch, signal_delay=signal_delay
            )
    tuned = loopback_series(True, args.loopback_links)
    untuned = loopback_series(False, args.loopback_links)
    wall = time.monotonic() - started

    rows = []
    for pair in all_pairs():
        mine = [r for r in ours if r.pair == pair]
        theirs = [r for r in anchor if r.pair == pair]
        rows.append(
            [
                f"{SHORT[pair[0]]}-{SHORT[pair[1]]}",
                "direct" if expected_direct(*pair) else "relay",
                f"{sum(1 for r in mine if r.opened and r.direct)}/{len(mine)}",
                fmt(percentile(setups(mine), 50)),
                fmt(percentile(setups(theirs), 50)),
                fmt(percentile([r.rtt_ms for r in mine if r.rtt_ms is not None], 50), 1),
                mine[0].describe if mine else "",
            ]
        )
    print_table(
        ["pair", "textbook", "direct", "ours p50 ms", "aiortc p50 ms", "rtt ms", "path (first)"],
        rows,
    )
    opened = [r for r in ours if r.opened]
    direct_share = sum(1 for r in opened if r.direct) / len(ours) if ours else None
    correct = sum(1 for r in opened if r.direct == expected_direct(*r.pair))
    rtts = [r.rtt_ms for r in opened if r.rtt_ms is not None]
    figures = {
        "setup_p50_ms": percentile(setups(ours), 50),
        "setup_p95_ms": percentile(setups(ours), 95),
        "setup_direct_p50_ms": percentile(setups(ours, True), 50),
        "setup_direct_p95_ms": percentile(setups(ours, True), 95),
        "setup_relayed_p50_ms": percentile(setups(ours, False), 50),
        "setup_relayed_p95_ms": percentile(setups(ours, False), 95),
        "floor_ms": floor_ms,
        "configured_rtt_ms": rtt_ms,
        "rtt_p50_ms": percentile(rtts, 50),
        "setup_unprepared_p50_ms": percentile(setups(unprepared), 50),
        "setup_unprepared_p95_ms": percentile(setups(unprepared), 95),
        "aiortc_pipe_setup_p50_ms": percentile(setups(anchor), 50),
        "aiortc_pipe_setup_p95_ms": percentile(setups(anchor), 95),
        "aiortc_pipe_direct_share": (
            sum(1 for r in anchor if r.opened and r.direct) / len(anchor) if anchor else None
        ),
        "aiortc_pipe_failed": sum(1 for r in anchor if not r.opened),
        "direct_share": direct_share,
        "textbook_direct_share": sum(1 for p in all_pairs() if expected_direct(*p)) / 21,
        "path_as_textbook_share": correct / len(ours) if ours else None,
        "links": len(ours),
        "failed": len(ours) - len(opened),
        "rounds": args.rounds,
        "batch": args.batch,
        "wall_s": wall,
        "attached_per_core": None,  # part A (supernode attach capacity) measures these
        "bytes_per_attached": None,
    }
    figures["loopback_relay_setup_p50_ms"] = percentile(tuned, 50)
    figures["loopback_relay_setup_p95_ms"] = percentile(tuned, 95)
    figures["loopback_relay_over_400ms"] = sum(1 for v in tuned if v > 400) / max(len(tuned), 1)
    figures["loopback_relay_untuned_p50_ms"] = percentile(untuned, 50)
    figures["loopback_relay_untuned_p95_ms"] = percentile(untuned, 95)
    figures["loopback_relay_untuned_over_400ms"] = sum(1 for v in untuned if v > 400) / max(
        len(untuned), 1
    )
    figures["ratio_setup_p50_vs_floor"] = ratio(figures["setup_p50_ms"], floor_ms)
    figures["ratio_setup_p50_vs_aiortc_pipe"] = ratio(
        figures["setup_p50_ms"], figures["aiortc_pipe_setup_p50_ms"]
    )
    print()
    print(
        f"ours: p50 {fmt(figures['setup_p50_ms'])} ms, p95 {fmt(figures['setup_p95_ms'])} ms "
        f"(direct p50 {fmt(figures['setup_direct_p50_ms'])}, relayed p50 "
        f"{fmt(figures['setup_relayed_p50_ms'])}); floor {floor_ms:.0f} ms; plain aiortc p50 "
        f"{fmt(figures['aiortc_pipe_setup_p50_ms'])} ms; direct {direct_share}; "
        f"{figures['failed']} failed of {len(ours)}"
    )
    print(
        f"loopback relay-only ({len(tuned)} links each): p50/p95 "
        f"{fmt(figures['loopback_relay_setup_p50_ms'])}/{fmt(figures['loopback_relay_setup_p95_ms'])}"
        f" ms with ice_tuning, {fmt(figures['loopback_relay_untuned_p50_ms'])}/"
        f"{fmt(figures['loopback_relay_untuned_p95_ms'])} ms without"
    )
    print("Indicative: 2 cores shared with other work; set-up includes CPU queueing.")
    print_final_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

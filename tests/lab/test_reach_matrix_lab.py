"""Every NAT pair connects with PeerLink, direct wherever a direct path exists (the reach matrix).

Peers behind {public, full cone, address-restricted, port-restricted,
symmetric, UDP blocked} x the same: 21 unordered pairs, each peer behind its
own router, three relay supernodes (``p2pnode relay``: STUN + TURN over UDP and
TCP) on the public segment, 40 ms RTT between peers (10 ms each way on every
peer's link, so 20 ms to a supernode). All 21 links are dialled at once in one
shared topology (tests/harness/lab_reach.py); the test process carries the
signalling between the agents (tests/harness/lab_peer.py) and prints the matrix.

Expected (textbook, LAB-NOTES): relayed for port-restricted-symmetric,
symmetric-symmetric and every pair with UDP blocked; direct for all others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.lab_reach import ReachLab, all_pairs, expected_direct, format_matrix
from tests.harness.netns import Lab, NatType
from tests.lab.conftest import require_lab_tools

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DELAY_MS = 10.0  # each way on each peer's link: 40 ms peer-to-peer RTT

# The expected table, written out (the harness's expected_direct must agree with it).
N, F, A, P, S, B = (
    NatType.NONE,
    NatType.FULL_CONE,
    NatType.ADDRESS_RESTRICTED,
    NatType.PORT_RESTRICTED,
    NatType.SYMMETRIC,
    NatType.UDP_BLOCKED,
)
RELAYED = {(P, S), (S, S), (N, B), (F, B), (A, B), (P, B), (S, B), (B, B)}


@pytest.fixture(scope="module")
def reach_lab() -> Iterator[ReachLab]:
    require_lab_tools()
    with Lab() as lab:
        yield ReachLab(lab, delay_ms=DELAY_MS)


def test_expected_table_is_the_textbook_one() -> None:
    pairs = all_pairs()
    assert len(pairs) == 21
    assert {pair for pair in pairs if not expected_direct(*pair)} == RELAYED


def test_every_pair_connects_direct_wherever_physics_allows(reach_lab: ReachLab) -> None:
    pairs = all_pairs()
    results = reach_lab.run(pairs, timeout=60.0)
    print("\n" + format_matrix(results))
    for pair in pairs:
        result = results[pair]
        print(
            f"{pair[0].value:>18} - {pair[1].value:<18} "
            f"{'open' if result.opened else 'FAILED':6} {result.describe:42} "
            f"setup {result.setup_ms or 0:6.0f} ms  rtt {result.rtt_ms or 0:5.1f} ms {result.error}"
        )
    failed = {pair: results[pair].error for pair in pairs if not results[pair].opened}
    assert not failed, (failed, reach_lab.last_errors)
    wrong = {
        pair: results[pair].describe
        for pair in pairs
        if results[pair].direct != (pair not in RELAYED)
    }
    assert not wrong, wrong
    # The answering side sends on the same kind of path (its nominated pair).
    answers = reach_lab.answer_direct
    disagree = {
        pair: answers.get(pair) for pair in pairs if answers.get(pair) != results[pair].direct
    }
    assert not disagree, disagree
    for pair in pairs:
        result = results[pair]
        assert result.echo, pair  # data went there and back over the data channel
        # A ping crosses both peers' delayed links twice: at least the configured RTT.
        assert result.rtt_ms is not None and result.rtt_ms >= 4 * DELAY_MS * 0.9, pair
    # UDP-blocked peers found UDP silent: no STUN, TURN over TCP; everyone else uses UDP.
    for name, plan in reach_lab.plans.items():
        if name.endswith("-blocked"):
            assert plan["stun"] is None and plan["turn_transport"] == "tcp", (name, plan)
        else:
            assert plan["stun"] is not None and plan["turn_transport"] == "udp", (name, plan)
    assert "(tcp, ours)" in results[(B, B)].describe


def test_connect_benchmark_keeps_its_output_contract() -> None:
    """benchmarks/connect.py at its smallest: runs end to end, last line is the JSON report.

    Not a speed test: no figure is asserted beyond "every link opened".
    """
    require_lab_tools()
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "connect.py"
    command = [sys.executable, str(script), "--rounds", "1", "--batch", "21", "--no-anchor"]
    command += ["--loopback-links", "2"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "setup_p50_ms",
        "setup_p95_ms",
        "floor_ms",
        "ratio_setup_p50_vs_floor",
        "aiortc_pipe_setup_p50_ms",
        "direct_share",
        "rtt_p50_ms",
        "loopback_relay_setup_p50_ms",
        "loopback_relay_untuned_p50_ms",
    ):
        assert key in report, key
    assert report["links"] == 21 and report["failed"] == 0
    assert report["floor_ms"] == 80.0

"""10,000 sans-IO cores in one process, in virtual time, with seeded loss and reordering.

Issue 10: lookups take about log2(N)/something hops; with 30 % of the nodes killed
at once, at least 99 % of gets for records stored before still succeed once a
replication interval has passed. The tables are built as the joins would leave
them (``scale.prefilled``); puts, gets, timeouts and replication are the real
protocol over ``MemNet``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode.dht.config import DhtConfig
from tests.unit.dht.scale import churn_run, prefilled

NODES = 10_000
RECORDS = 60
GETS = 200


@pytest.mark.slow
def test_ten_thousand_nodes_survive_losing_thirty_percent_at_once() -> None:
    config = dataclasses.replace(DhtConfig(), replicate_interval=30.0)
    net, nodes = prefilled(NODES, seed=11, config=config, loss=0.01)
    net.jitter = 0.004  # up to 4x the base latency: datagrams overtake each other
    report = churn_run(net, nodes, records=RECORDS, gets=GETS, kill_fraction=0.3, seed=12)
    assert report.nodes == NODES
    assert report.stored_median >= config.k - 2
    assert report.gets_before == GETS
    assert report.gets_after >= math.ceil(0.99 * GETS)
    assert report.hops_median <= math.log2(NODES) / 3
    assert report.queries_median <= 3 * config.alpha


def test_the_benchmark_simulate_mode_ends_with_its_json_line() -> None:
    root = Path(__file__).resolve().parents[3]
    command = [
        sys.executable,
        str(root / "benchmarks" / "dht_lookup.py"),
        "--simulate",
        "300",
        "--puts",
        "5",
        "--gets",
        "10",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, cwd=root
    )
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout.strip().splitlines()[-1])["simulate"]
    assert figures["nodes"] == 300
    assert figures["gets"] == 10
    assert 0.0 <= figures["success_after_churn"] <= 1.0
    assert figures["success_before"] == 1.0

"""The DHT benchmark runs end to end at a tiny size and keeps its output contract.

Not a speed test (no figure is asserted): it proves the script still builds our
nodes, puts and gets signed records, and ends with the JSON line other tools
parse. Only our own DHT runs here, so the anchors' packages are not needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "dht_lookup.py"
FIGURES = (
    "get_p50_ms",
    "get_p95_ms",
    "put_p50_ms",
    "success",
    "datagrams_per_get",
    "rss_mb_per_node",
    "idle_datagrams_per_s",
)


def run_benchmark(*extra: str) -> tuple[str, dict[str, object]]:
    command = [
        sys.executable,
        str(SCRIPT),
        "--nodes",
        "8",
        "--gets",
        "5",
        "--puts",
        "3",
        "--idle-seconds",
        "0.2",
        "--systems",
        "p2pnode",
        "--system-timeout",
        "60",
        *extra,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=90, check=False, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert isinstance(report, dict)
    return completed.stdout, report


def test_last_line_is_the_json_report_with_every_figure() -> None:
    stdout, report = run_benchmark()  # as root: in a private network namespace
    assert report["nodes"] == 8
    assert report["dead_fraction"] == 0.0
    assert report["p2pnode_error"] is None
    ours = report["p2pnode"]
    assert isinstance(ours, dict)
    for key in FIGURES:
        assert key in ours, key
    assert ours["gets"] == 5
    assert ours["success"] == 1.0  # 8 healthy nodes on loopback find every record
    assert isinstance(ours["datagrams_per_get"], float)
    assert ours["datagrams_per_get"] >= 0
    # Anchors not asked for: present as null with the reason.
    for anchor in ("kademlia", "opendht"):
        assert report[anchor] is None
        assert isinstance(report[f"{anchor}_error"], str)
    assert report["ratio_get_p50_vs_opendht"] is None
    assert report["ratio_get_p50_vs_kademlia"] is None
    table = stdout.strip().splitlines()[:-1]  # the readable table comes before the JSON
    assert any(line.startswith("system") and "get p50 ms" in line for line in table)
    assert any(line.startswith("p2pnode ") for line in table)


def test_dead_nodes_are_not_asked_and_the_report_says_how_many_died() -> None:
    _, report = run_benchmark("--isolate", "off", "--dead-fraction", "0.25")
    ours = report["p2pnode"]
    assert isinstance(ours, dict)
    assert ours["dead"] == 2
    assert ours["gets"] == 5

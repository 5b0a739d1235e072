"""benchmarks/relay_calls.py runs end to end at a tiny size and keeps its output contract.

Not a speed test: it proves the live ladder sets calls up on both relays (ours and
coturn's), relays every packet of 10 calls both ways (two allocations each, our
relay's hairpin between its own relayed sockets included) and ends with the JSON
line the calls benchmark reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def test_ten_calls_on_each_relay_lose_nothing() -> None:
    require_tool("turnserver", "coturn")
    command = [
        sys.executable, str(ROOT / "benchmarks" / "relay_calls.py"),
        "--start", "10", "--max-calls", "10", "--seconds", "0.5", "--drain", "0.3",
        "--late", "1.0", "--timeout", "60",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["relayed_calls_per_core"] == 10, done.stderr[-2000:]
    assert report["coturn_calls_per_core"] == 10, done.stderr[-2000:]
    for kind in ("p2pnode", "coturn"):
        (step,) = report["steps"][kind]
        # 10 calls x 2 streams x 50 pps x 0.5 s, every one back.
        assert step["sent"] == step["received"] == 500, step
        assert step["silent_legs"] in (0, -1), step

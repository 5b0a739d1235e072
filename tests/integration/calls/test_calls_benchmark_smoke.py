"""benchmarks/calls.py runs end to end at its smallest size and keeps its output contract.

Not a speed test: no figure is compared with a goal; it proves the script still
builds its lab, places direct, warm, relayed and plain-aiortc calls, and ends
with the JSON line (every key the issue names present).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.conftest import require_lab_tools

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
KEYS = (
    "setup_p50_ms",
    "setup_p95_ms",
    "floor_ms",
    "ratio_setup_p50_vs_floor",
    "aiortc_pipe_setup_p50_ms",
    "relayed_calls_per_core",
    "coturn_calls_per_core",
    "failover_gap_s",
)


def test_the_last_line_is_the_json_report() -> None:
    require_lab_tools()
    command = [
        sys.executable, str(ROOT / "benchmarks" / "calls.py"),
        "--calls", "1", "--rtt-ms", "0", "--no-failover", "--no-relay-capacity",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert key in report, key
    assert report["failed_calls"] == 0, done.stderr[-2000:]
    for key in ("setup_p50_ms", "relayed_setup_p50_ms", "warm_setup_p50_ms"):
        assert isinstance(report[key], float) and report[key] > 0, (key, report)
    assert report["failover_gap_s"] is None  # skipped on request, and said so

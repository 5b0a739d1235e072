"""benchmarks/one_time_prekeys.py runs end to end at a tiny size and keeps its output
contract (its last line is the JSON of every figure). Not a speed test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
FIGURES = (
    "takes_per_s",
    "deposits_per_s",
    "top_up_100_ms",
    "session_with_opk_ms",
    "session_without_opk_ms",
)


@pytest.mark.slow
def test_quick_run_prints_the_figures_last() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "one_time_prekeys.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    for figure in FIGURES:
        assert isinstance(result[figure], float) and result[figure] > 0

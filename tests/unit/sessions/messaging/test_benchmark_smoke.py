"""benchmarks/messaging.py runs end to end at a tiny size and keeps its output contract.

Not a speed test: no figure is asserted beyond being present and the online
run leaving the outbox empty (every online message was receipted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
FIGURES = ("online_p50_ms", "online_p95_ms", "rtt_ms", "deposits_per_s", "ratchet_ops_per_s")


@pytest.mark.slow
def test_quick_run_prints_the_figures_last() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "messaging.py"), "--quick"],
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
    assert result["catchup_100_s"] is not None
    assert result["outbox_after_online"] == 0

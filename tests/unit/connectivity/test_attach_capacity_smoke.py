"""benchmarks/attach_capacity.py runs end to end at a tiny size and keeps its output contract.

Not a speed test (no figure is asserted beyond being measured): it proves the
script still attaches real sockets to a real home and ends with the JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "attach_capacity.py"


def test_attach_capacity_reports_every_figure() -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--peers", "50", "--sockets", "10", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["peers_measured"] == 50
    for figure in ("bytes_per_attached", "keepalives_per_cpu_s", "attached_per_core"):
        assert report[figure] > 0, figure
    assert 0 <= report["keepalive_loss"] < 1

"""Run a benchmark at its smallest size and read the JSON its last line holds.

The smoke tests of benchmarks/ check the output contract (the script runs end to
end; its last line is one JSON object with every figure), never speed: each
names its figures and asserts on them itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "quick_figures"]

ROOT = Path(__file__).resolve().parents[2]


def quick_figures(script: str, timeout: float = 120) -> dict[str, Any]:
    """``benchmarks/<script> --quick`` must exit 0; its last stdout line, parsed."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result

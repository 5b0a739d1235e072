"""benchmarks/one_time_prekeys.py runs end to end at a tiny size and keeps its output
contract (its last line is the JSON of every figure). Not a speed test."""

from __future__ import annotations

import pytest

from tests.harness.benchmarks import quick_figures

FIGURES = (
    "takes_per_s",
    "deposits_per_s",
    "top_up_100_ms",
    "session_with_opk_ms",
    "session_without_opk_ms",
)


@pytest.mark.slow
def test_quick_run_prints_the_figures_last() -> None:
    result = quick_figures("one_time_prekeys.py")
    for figure in FIGURES:
        assert isinstance(result[figure], float) and result[figure] > 0

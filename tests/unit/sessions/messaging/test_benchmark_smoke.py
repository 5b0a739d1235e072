"""benchmarks/messaging.py runs end to end at a tiny size and keeps its output contract.

Not a speed test: no figure is asserted beyond being present and the online
run leaving the outbox empty (every online message was receipted).
"""

from __future__ import annotations

import pytest

from tests.harness.benchmarks import quick_figures

FIGURES = ("online_p50_ms", "online_p95_ms", "rtt_ms", "deposits_per_s", "ratchet_ops_per_s")


@pytest.mark.slow
def test_quick_run_prints_the_figures_last() -> None:
    result = quick_figures("messaging.py")
    for figure in FIGURES:
        assert isinstance(result[figure], float) and result[figure] > 0
    assert result["catchup_100_s"] is not None
    assert result["outbox_after_online"] == 0

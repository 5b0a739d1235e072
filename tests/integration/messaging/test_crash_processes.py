"""The issue's proof with real processes on loopback: 1,000 messages, two SIGKILLs, nothing lost.

The scenario (``crash_scenario.py``): three mailbox processes, one SIGKILLed at
300 messages and restarted on its database at 800; alice's process SIGKILLed at
600 and restarted; bob attaches afterwards and must show all 1,000 once, in
order, with alice's outbox and every mailbox empty at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.messaging.crash_scenario import Placement, run_scenario

ROOT = Path(__file__).resolve().parents[3]
COUNT = int(os.environ.get("P2PNODE_CRASH_COUNT", "1000"))


def launch(role: str, argv: list[str], log: Path) -> subprocess.Popen[str]:
    with log.open("a") as errors:
        return subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            text=True,
            stderr=errors,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )


@pytest.mark.slow
def test_thousand_messages_survive_mailbox_and_sender_sigkill(tmp_path: Path) -> None:
    loopback = "127.0.0.1"
    catchup = run_scenario(tmp_path, Placement(launch, (loopback, loopback, loopback)), COUNT)
    assert catchup > 0

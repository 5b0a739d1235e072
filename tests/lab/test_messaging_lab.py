"""The 1,000-message crash scenario across lab NATs with 5 % loss on both access links.

Bob behind a symmetric NAT, alice behind a port-restricted one, the three
mailbox supernodes on public hosts; every role is a real process in its
namespace, and the same SIGKILLs as on loopback (``crash_scenario.py``). The
mailbox path is TCP from behind the NATs, so it must survive the loss by
retransmission and the outbox's retries.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness.netns import Host, Lab, NatType
from tests.integration.messaging.crash_scenario import Placement, run_scenario

pytestmark = [pytest.mark.lab, pytest.mark.slow]

COUNT = 1000


def test_thousand_messages_behind_nats_with_loss(lab: Lab, tmp_path: Path) -> None:
    boxes = [lab.public_host(f"box{i}") for i in range(3)]
    alice = lab.private_host("alice", NatType.PORT_RESTRICTED)
    bob = lab.private_host("bob", NatType.SYMMETRIC)
    for host in (alice, bob):
        lab.set_loss(host, 5)
    where: dict[str, list[Host]] = {"mailbox": boxes, "alice": [alice], "bob": [bob]}

    def launch(role: str, argv: list[str], log: Path) -> subprocess.Popen[str]:
        if role == "mailbox":
            # mailboxes start in order 0, 1, 2 and box 1 restarts on its own host
            index = int(Path(argv[3]).stem.removeprefix("box"))
            host = where["mailbox"][index]
        else:
            host = where[role][0]
        with log.open("a") as errors:
            return host.popen(host.python(*argv), stderr=errors)

    hosts = (boxes[0].addresses[0], boxes[1].addresses[0], boxes[2].addresses[0])
    catchup = run_scenario(tmp_path, Placement(launch, hosts), COUNT)
    assert catchup > 0

"""The issue's proof with real processes on loopback: 1,000 messages, two SIGKILLs, nothing lost.

Three mailbox supernode processes, alice and bob as processes
(``peer_process.py``). Bob publishes his bundle and mailbox list, then stops.
Alice sends 1,000 messages; mailbox 1 is SIGKILLed after 300 and restarted on
its database after 800; alice is SIGKILLed after 600 and restarted (she
resumes after what her store committed). Bob comes back: every message is
shown exactly once and in order, alice's outbox empties (she exits 0 only
then), and no mailbox holds anything for bob afterwards.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pnode.identity import Identity

SCRIPT = Path(__file__).with_name("peer_process.py")
ROOT = Path(__file__).resolve().parents[3]
COUNT = int(os.environ.get("P2PNODE_CRASH_COUNT", "1000"))
ALICE_SEED, BOB_SEED = "a1" * 32, "b2" * 32
MAILBOX_SEEDS = ["c3" * 32, "d4" * 32, "e5" * 32]


class Proc:
    def __init__(self, log: Path, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = log
        with log.open("a") as errors:
            self.popen = subprocess.Popen(
                [sys.executable, str(SCRIPT), *args],
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
            )
        self.lines: list[str] = []
        self.pending = b""

    def wait_for(self, prefix: str, limit: float = 90.0) -> str:
        """The next stdout line starting with ``prefix`` (raw fd reads: select and a
        buffered readline together miss lines already pulled into the buffer)."""
        assert self.popen.stdout is not None
        descriptor = self.popen.stdout.fileno()
        deadline = time.monotonic() + limit
        while True:
            while b"\n" in self.pending:
                raw, self.pending = self.pending.split(b"\n", 1)
                line = raw.decode()
                self.lines.append(line)
                if line.startswith(prefix):
                    return line
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {prefix!r} line; last: {self.lines[-3:]}"
            ready, _, _ = select.select([descriptor], [], [], remaining)
            if ready:
                chunk = os.read(descriptor, 65536)
                assert chunk, f"process ended before {prefix!r}; last: {self.lines[-3:]}"
                self.pending += chunk

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def held(db: Path, recipient: bytes) -> int:
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "SELECT count(*) FROM items WHERE recipient = ?", (recipient,)
        ).fetchone()
    return int(row[0])


@pytest.mark.slow
def test_thousand_messages_survive_mailbox_and_sender_sigkill(tmp_path: Path) -> None:
    procs: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc(tmp_path / f"{args[0]}.log", *args)
        procs.append(proc)
        return proc

    try:
        boxes = [
            start("mailbox", seed, str(tmp_path / f"box{i}.db"), "0")
            for i, seed in enumerate(MAILBOX_SEEDS)
        ]
        ports = [int(box.wait_for("ready").split()[1]) for box in boxes]
        keys = [Identity.generate(bytes.fromhex(seed)).public_key for seed in MAILBOX_SEEDS]
        mailboxes = ",".join(f"{k.hex()}@{p}" for k, p in zip(keys, ports, strict=True))
        bundle_file, shown_file, stop_file = (tmp_path / n for n in ("bundle", "shown", "stop"))
        bob_home, alice_home = str(tmp_path / "bob"), str(tmp_path / "alice")
        start("publish", bob_home, BOB_SEED, mailboxes, str(bundle_file)).wait_for("published")

        alice_args = ("alice", alice_home, ALICE_SEED, mailboxes, str(bundle_file), str(COUNT))
        alice = start(*alice_args)
        alice.wait_for("sent 300")
        boxes[1].kill()  # a mailbox supernode dies
        alice.wait_for("sent 600")
        alice.kill()  # alice dies mid-send
        alice = start(*alice_args)
        resumed = int(alice.wait_for("resume").split()[1])
        assert 600 <= resumed < COUNT
        alice.wait_for("sent 800")
        boxes[1] = start("mailbox", MAILBOX_SEEDS[1], str(tmp_path / "box1.db"), str(ports[1]))
        boxes[1].wait_for("ready")
        alice.wait_for(f"sent {COUNT}")

        bob = start("bob", bob_home, BOB_SEED, mailboxes, str(shown_file), str(stop_file))
        bob.wait_for("attached")
        alice.wait_for("done", 120)
        assert alice.popen.wait(30) == 0, alice.log.read_text()[-3000:]
        stop_file.write_text("stop")
        bob.wait_for("stopped")

        shown = shown_file.read_text(encoding="utf-8").splitlines()
        assert shown == [f"message {i}" for i in range(COUNT)]  # all, once, in order
        bob_key = Identity.generate(bytes.fromhex(BOB_SEED)).public_key
        assert [held(tmp_path / f"box{i}.db", bob_key) for i in range(3)] == [0, 0, 0]
        with sqlite3.connect(Path(alice_home) / "chat.db") as connection:
            assert connection.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    finally:
        for proc in procs:
            proc.stop()

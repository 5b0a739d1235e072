"""The 1,000-message crash scenario, run on loopback or in the netns lab.

Three mailbox supernode processes, alice and bob as processes
(``peer_process.py``). Bob publishes his bundle and mailbox list, then stops.
Alice sends ``count`` messages; mailbox 1 is SIGKILLed at 30 % and restarted on
its database at 80 %; alice is SIGKILLed at 60 % and restarted (she resumes
after what her store committed). Bob comes back: every message is shown exactly
once and in order, alice's outbox empties (she exits 0 only then), and no
mailbox holds anything for bob afterwards.

Where each role runs is the caller's ``Launcher``: a plain subprocess on
loopback, or ``Host.popen`` inside a lab namespace.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2pnode.identity import Identity

SCRIPT = str(Path(__file__).with_name("peer_process.py"))
ALICE_SEED, BOB_SEED = "a1" * 32, "b2" * 32
MAILBOX_SEEDS = ["c3" * 32, "d4" * 32, "e5" * 32]


class Proc:
    """A role's process; lines come from raw fd reads (a buffered readline plus
    select would miss lines already pulled into Python's buffer)."""

    def __init__(self, popen: subprocess.Popen[str], log: Path) -> None:
        self.popen = popen
        self.log = log
        self.lines: list[str] = []
        self.pending = b""

    def wait_for(self, prefix: str, limit: float = 120.0) -> str:
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


@dataclass(frozen=True)
class Placement:
    """Where the roles run: a launcher per role and the mailboxes' listening hosts."""

    launch: Callable[[str, list[str], Path], subprocess.Popen[str]]  # (role, argv, log)
    mailbox_hosts: tuple[str, str, str]


def held(db: Path, recipient: bytes) -> int:
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "SELECT count(*) FROM items WHERE recipient = ?", (recipient,)
        ).fetchone()
    return int(row[0])


def run_scenario(tmp_path: Path, placement: Placement, count: int) -> float:
    """Run it; returns the seconds bob's attach took (the catch-up)."""
    procs: list[Proc] = []

    def start(role: str, *args: str) -> Proc:
        log = tmp_path / f"{role}.log"
        proc = Proc(placement.launch(role, [SCRIPT, *args], log), log)
        procs.append(proc)
        return proc

    try:
        boxes = [
            start("mailbox", "mailbox", seed, str(tmp_path / f"box{i}.db"), host, "0")
            for i, (seed, host) in enumerate(
                zip(MAILBOX_SEEDS, placement.mailbox_hosts, strict=True)
            )
        ]
        ports = [int(box.wait_for("ready").split()[1]) for box in boxes]
        keys = [Identity.generate(bytes.fromhex(seed)).public_key for seed in MAILBOX_SEEDS]
        mailboxes = ",".join(
            f"{k.hex()}@{h}:{p}"
            for k, h, p in zip(keys, placement.mailbox_hosts, ports, strict=True)
        )
        bundle_file, shown_file, stop_file = (tmp_path / n for n in ("bundle", "shown", "stop"))
        bob_home, alice_home = str(tmp_path / "bob"), str(tmp_path / "alice")
        start("bob", "publish", bob_home, BOB_SEED, mailboxes, str(bundle_file)).wait_for(
            "published"
        )

        alice_args = ("alice", alice_home, ALICE_SEED, mailboxes, str(bundle_file), str(count))
        alice = start("alice", *alice_args)
        alice.wait_for(f"sent {count * 3 // 10}")
        boxes[1].kill()  # a mailbox supernode dies
        alice.wait_for(f"sent {count * 6 // 10}")
        alice.kill()  # alice dies mid-send
        alice = start("alice", *alice_args)
        resumed = int(alice.wait_for("resume").split()[1])
        assert count * 6 // 10 <= resumed < count
        alice.wait_for(f"sent {count * 8 // 10}")
        box1 = (MAILBOX_SEEDS[1], str(tmp_path / "box1.db"), placement.mailbox_hosts[1])
        boxes[1] = start("mailbox", "mailbox", *box1, str(ports[1]))
        boxes[1].wait_for("ready")
        alice.wait_for(f"sent {count}")

        bob = start("bob", "bob", bob_home, BOB_SEED, mailboxes, str(shown_file), str(stop_file))
        catchup = float(bob.wait_for("attached").split()[2])
        alice.wait_for("done", 180)
        assert alice.popen.wait(30) == 0, alice.log.read_text()[-3000:]
        stop_file.write_text("stop")
        bob.wait_for("stopped")

        shown = shown_file.read_text(encoding="utf-8").splitlines()
        assert shown == [f"message {i}" for i in range(count)]  # all, once, in order
        bob_key = Identity.generate(bytes.fromhex(BOB_SEED)).public_key
        assert [held(tmp_path / f"box{i}.db", bob_key) for i in range(3)] == [0, 0, 0]
        with sqlite3.connect(Path(alice_home) / "chat.db") as connection:
            assert connection.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        return catchup
    finally:
        for proc in procs:
            proc.stop()

"""The README's main command with peers behind NATs: `p2pnode demo --lab` as a person runs
it (root), every step read from what it prints; and Ctrl-C in the middle of the lab leaves
no namespace, state file or process behind.

The lab part: two public supernodes, alice behind a port-restricted NAT and bob behind a
symmetric one, each a real `p2pnode run`; that pair has no direct path, so the link and
the call must be relayed by a supernode. A phone (our SIP user agent) behind its own NAT
is an account on the first supernode's gateway: it calls bob by login through the
bridge, and bob calls its login back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.netns import STATE_DIR, LabError, read_line
from tests.lab.conftest import require_lab_tools

pytestmark = [pytest.mark.lab, pytest.mark.slow]

WAIT = 240  # bound on the whole demo on a loaded 2-core machine, not a speed assertion
DEMO = [sys.executable, "-m", "p2pnode", "demo", "--lab", "--nodes", "12", "--lookups", "2"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("P2PNODE_HOME", None)
    return env


def _namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(prefix)]


def _processes_with(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (the demo's temporary directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in command:
                found.append(int(entry.name))
    return found


def _gone(prefix: str) -> None:
    assert _namespaces(prefix) == []
    assert not (STATE_DIR / f"{prefix}.json").exists()


def one(lines: list[str], pattern: str) -> re.Match[str]:
    found = [m for m in (re.search(pattern, line) for line in lines) if m is not None]
    assert len(found) == 1, (pattern, lines)
    return found[0]


def test_the_nat_demo_runs_every_step_and_cleans_up() -> None:
    require_lab_tools()
    result = subprocess.run(
        DEMO, capture_output=True, text=True, timeout=WAIT, check=False, env=_env()
    )
    out = result.stdout
    lines = out.splitlines()
    assert result.returncode == 0, out + result.stderr[-3000:]
    steps = [n for n in range(1, 13) if any(line.startswith(f"[{n}/12]") for line in lines)]
    assert steps == list(range(1, 13))
    assert out.rstrip().splitlines()[-1].startswith("demo passed")
    assert "FAILED" not in out and "failed:" not in out

    # the topology it says it built, and that it is gone afterwards
    prefix = one(lines, r"lab (p2p[0-9a-f]{6}): namespaces").group(1)
    alice = one(lines, r"alice (10\.\d+\.0\.2) behind a port-restricted NAT -> (203\.0\.113\.\d+)")
    bob = one(lines, r"bob (10\.\d+\.0\.2) behind a symmetric NAT -> (203\.0\.113\.\d+)")
    assert alice.group(2) != bob.group(2)
    supernodes = re.findall(r"(supernode\d) (203\.0\.113\.\d+) on the public segment", out)
    assert len(supernodes) == 2
    _gone(prefix)

    # [8/12] bob found by login, and the pair's link goes through a supernode's relay
    link = one(lines, r"link alice -> bob: relayed via (supernode\d) \((203\.0\.113\.\d+)\)")
    assert (link.group(1), link.group(2)) in supernodes
    assert float(one(lines, r"link alice -> bob: .* rtt ([0-9.]+) ms").group(1)) > 0

    # [9/12] both ways online with receipts; then held in mailboxes while bob is stopped
    assert "alice$ p2pnode send bob 'hi bob" in out and "bob$ p2pnode send alice 'hi alice" in out
    assert len(re.findall(r"-> online, \w+'s inbox shows it, delivered receipt back", out)) == 2
    assert re.search(r"bob unreachable, [23] copies held in the supernodes' mailboxes", out)
    assert "its inbox shows ['see you at six']" in out
    assert "bob's delivered receipt reached alice (state delivered)" in out

    # [10/12] a relayed call, each side heard the other's tone
    call = one(lines, r"answered: audio/\w+, relay \(\S+\) via (supernode\d) \(")
    assert call.group(1) in {name for name, _ in supernodes}
    heard = one(lines, r"alice heard ([0-9.]+) Hz, bob heard ([0-9.]+) Hz \(FFT\)")
    assert abs(float(heard.group(1)) - 660) < 5 and abs(float(heard.group(2)) - 440) < 5

    # [11/12] the phone behind its NAT calls the login bob through the bridge, and back
    assert one(lines, r"^\[11/12\] a phone on the gateway calls a peer behind a NAT")
    one(lines, r"phone 10\.\d+\.0\.2 behind a port-restricted NAT -> 203\.0\.113\.\d+")
    there = one(lines, r"the phone heard ([0-9.]+) Hz, bob's node heard ([0-9.]+) Hz \(FFT\)")
    assert abs(float(there.group(1)) - 660) < 10 and abs(float(there.group(2)) - 440) < 10
    back = one(lines, r"and answers: it heard ([0-9.]+) Hz, bob heard ([0-9.]+) Hz \(FFT\)")
    assert abs(float(back.group(1)) - 550) < 10 and abs(float(back.group(2)) - 440) < 10

    # [12/12] the gateway's own phones, on loopback
    assert one(lines, r"^\[12/12\] phones:")
    assert one(lines, r"alice's phone heard ([0-9.]+) Hz, bob's phone heard ([0-9.]+) Hz")


def test_ctrl_c_during_the_lab_removes_it() -> None:
    require_lab_tools()
    demo = subprocess.Popen(
        [*DEMO[:-4], "--nodes", "3", "--lookups", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        prefix = ""
        while not prefix:
            line = read_line(demo, timeout=120)
            found = re.search(r"lab (p2p[0-9a-f]{6}): namespaces", line)
            prefix = found.group(1) if found else ""
        deadline = time.monotonic() + 60
        while not _processes_with("p2pnode-natdemo-"):  # its nodes are starting
            assert time.monotonic() < deadline, "no lab node started"
            time.sleep(0.1)
        assert _namespaces(prefix)
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    except (LabError, subprocess.TimeoutExpired):
        demo.kill()
        raise
    finally:
        demo.communicate()
    assert demo.returncode == 130
    _gone(prefix)
    assert _processes_with("p2pnode-natdemo-") == []

"""`p2pnode demo` as a person runs it (a real process), every step's outcome read from what it
prints; and in-process, a step that does not check out turns the whole demo into exit 1."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from p2pnode.connectivity.supernode import SupernodeConfig
from p2pnode.demo import supernode as demo_supernode
from p2pnode.demo.walkthrough import run_demo

WAIT = 60  # bound on the whole demo, not a speed assertion
NAPTR = (
    '9.9.1.0.5.5.5.0.0.8.1.e164.arpa. 60 IN NAPTR 100 10 "u" "E2U+sip" '
    '"!^.*$!sip:alice@example.net!" .'
)


def p2pnode(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("P2PNODE_HOME", None)
    command = [sys.executable, "-m", "p2pnode", *args]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=WAIT, env=env
    )


def line_with(lines: list[str], text: str) -> str:
    found = [line for line in lines if text in line]
    assert len(found) == 1, (text, found)
    return found[0]


def test_demo_runs_every_step_and_passes() -> None:
    result = p2pnode("demo", "--loopback", "--nodes", "12", "--lookups", "2")
    out = result.stdout
    lines = out.splitlines()
    assert result.returncode == 0, out + result.stderr
    assert [n for n in range(1, 13) if any(line.startswith(f"[{n}/12]") for line in lines)] == [
        *range(1, 13)
    ]

    # 1-4: the DHT and the attacker
    assert "24/24 lookups returned the owner's record" in out
    assert "bad-signature" in out and "rollback" in out and "key-mismatch" in out
    assert "lookups afterwards return bob's genuine record and carol's seq 2: yes" in out

    # 5: contested claims, settled only by trusting the verifier
    assert "VERIFIED: alice's key" in line_with(lines, "resolves 'alice' trusting the verifier")
    untrusted = line_with(lines, "resolves 'alice' trusting nobody")
    assert "AMBIGUOUS, 2 unverified claims" in untrusted
    assert "alice's key" in untrusted and "mallory's key" in untrusted
    number = line_with(lines, "resolves +18005550199 trusting nobody")
    assert "AMBIGUOUS, 2 unverified claims" in number
    assert line_with(lines, "routes +18005550199").endswith(
        "trusting the verifier: sip:alice@example.net (verified, alice's record)"
    )

    # 6: the DNS gateway, UDP and TCP, and NXDOMAIN for a number nobody claims
    assert "over UDP: NOERROR" in out and "over TCP: NOERROR" in out
    assert [line.strip() for line in lines if "IN NAPTR" in line] == [NAPTR, NAPTR]
    assert "(+18005550100, claimed by nobody): NXDOMAIN with the zone's SOA" in out

    # 7: promoted by three agreeing dial-back rounds, found, used, released
    roles = [line.strip().split(" (")[0] for line in lines if line.strip().startswith("role:")]
    assert roles == ["role: client", "role: candidate", "role: candidate", "role: supernode"]
    promoted = re.search(r"relay on 127\.0\.0\.1:(\d+) udp\+tcp, 0/100 allocations", out)
    assert promoted is not None
    port = promoted.group(1)
    assert re.search(rf"relays: 127\.0\.0\.1:{port} \([0-9.]+ ms, load 0/100\)", out)
    assert "TURN credentials over the DHT: for its peer id" in out
    assert "saw it come from the relayed address: yes; the echo came back: yes" in out
    assert "released when alice closed it: yes" in out

    # 8-10 (demo/peers.py): whole nodes: a link by login, offline messages, a call
    assert re.search(r"link alice -> bob: (direct|relayed) .*, rtt [0-9.]+ ms", out)
    assert re.search(r"[2-3] copies held in mailboxes", out)
    assert "shows ['see you at six']" in out and "her outbox holds 0 message(s)" in out
    heard = re.search(r"alice heard ([0-9.]+) Hz, bob heard ([0-9.]+) Hz", out)
    assert heard is not None and abs(float(heard.group(1)) - 660) < 5
    assert abs(float(heard.group(2)) - 440) < 5

    # 11 (demo/sip.py): two accounts' settings, two of our phones registered, a call with audio
    assert len(re.findall(r"account (alice|bob): login=\1  password=\S{12,}  server=", out)) == 2
    phones = re.search(r"alice's phone heard ([0-9.]+) Hz, bob's phone heard ([0-9.]+) Hz", out)
    assert phones is not None and abs(float(phones.group(1)) - 660) < 10
    assert abs(float(phones.group(2)) - 440) < 10

    # 12 (demo/sip.py): a phone dials a P2P peer through the SIP<->P2P bridge
    bridged = re.search(r"alice's phone heard ([0-9.]+) Hz \(bob's.*node heard ([0-9.]+) Hz", out)
    assert bridged is not None and abs(float(bridged.group(1)) - 660) < 10
    assert abs(float(bridged.group(2)) - 440) < 10
    back = re.search(r"rings and answers: it heard ([0-9.]+) Hz, .* heard ([0-9.]+) Hz", out)
    assert back is not None and abs(float(back.group(1)) - 660) < 10
    assert abs(float(back.group(2)) - 440) < 10
    assert "FAILED" not in out and out.rstrip().splitlines()[-1].startswith("demo passed")


def test_a_step_that_does_not_check_out_fails_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The relay keeps its default deny list, so loopback peers are refused (403).
    def deny_loopback(**options: Any) -> SupernodeConfig:
        return SupernodeConfig(**{**options, "allow_peers": ()})

    monkeypatch.setattr(demo_supernode, "SupernodeConfig", deny_loopback)
    monkeypatch.setattr(demo_supernode, "ECHO_ATTEMPTS", 2)
    assert asyncio.run(run_demo(6, 1, 1)) == 1
    out = capsys.readouterr().out
    assert "the echo came back: NO" in out and "403" in out
    assert "[6/12]" in out and "FAILED" not in out.split("[7/12]")[0]  # the others passed
    assert out.rstrip().splitlines()[-1].startswith("demo FAILED")

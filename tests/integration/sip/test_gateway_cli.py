"""The `p2pnode sip` commands end to end, as an operator uses them (no Debian SIP tools).

Accounts are created with generated passwords and listed/removed; a gateway is
started with ``sip serve`` on a kernel-chosen port; two ``sip try-call``
processes (one waiting, one calling) register with the printed settings and
each reports the tone it heard from the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode.cli import main

PYTHON = sys.executable


def p2pnode(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "p2pnode", *args],
        env={**os.environ, "P2PNODE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def in_process(
    capsys: pytest.CaptureFixture[str], home: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    code = main([*args, "--home", str(home)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_account_add_prints_three_settings_and_list_remove_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def p2pnode(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return in_process(capsys, home, *args)

    added = p2pnode(tmp_path, "sip", "account", "add", "alice", "--domain", "gw.test")
    assert added.returncode == 0, added.stderr
    lines = dict(line.split(":", 1) for line in added.stdout.splitlines()[1:4])
    assert added.stdout.splitlines()[4].startswith("P2P identity hosted for alice: ")
    settings = {key.strip(): value.strip() for key, value in lines.items()}
    assert settings["login"] == "alice" and settings["server"] == "gw.test"
    assert len(settings["password"]) == 20
    assert settings["password"] not in (tmp_path / "sip-accounts.sqlite").read_bytes().decode(
        "latin-1"
    )
    # The domain is remembered; another one is refused (the HA1s depend on it).
    assert p2pnode(tmp_path, "sip", "account", "add", "bob", "--domain", "x.test").returncode == 2
    bob = p2pnode(tmp_path, "sip", "account", "add", "bob", "--password", "short")
    assert bob.returncode == 2 and "12" in bob.stderr
    listed = json.loads(p2pnode(tmp_path, "sip", "account", "list", "--json").stdout)
    assert [row["login"] for row in listed] == ["alice"]
    assert p2pnode(tmp_path, "sip", "account", "remove", "alice").returncode == 0
    assert p2pnode(tmp_path, "sip", "account", "remove", "alice").returncode == 1


@pytest.mark.slow
def test_serve_and_two_try_calls_hear_each_other(tmp_path: Path) -> None:
    env = {**os.environ, "P2PNODE_HOME": str(tmp_path)}
    passwords = {}
    for login in ("alice", "bob"):
        added = p2pnode(tmp_path, "sip", "account", "add", login, "--domain", "gw.test", "--json")
        passwords[login] = json.loads(added.stdout)["password"]
    server = subprocess.Popen(
        [PYTHON, "-m", "p2pnode", "sip", "serve", "--listen", "127.0.0.1:0"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        address = server.stdout.readline().split()[-1]
        status = p2pnode(tmp_path, "sip", "status", "--server", address, "--json")
        assert json.loads(status.stdout)["accounts"] == 2
        common = ["sip", "try-call", "--server", address, "--domain", "gw.test", "--json"]
        common += ["--local-ip", "127.0.0.1", "--seconds", "1.5"]
        waiting = subprocess.Popen(
            [PYTHON, "-m", "p2pnode", *common, "--login", "bob", "--password", passwords["bob"],
             "--tone", "660", "--wait", "30"],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert waiting.stdout is not None
        assert "registered" in waiting.stdout.readline()
        calling = p2pnode(
            tmp_path, *common, "--login", "alice", "--password", passwords["alice"], "--to", "bob"
        )
        assert calling.returncode == 0, calling.stderr
        answered, _ = waiting.communicate(timeout=30)
        assert abs(json.loads(calling.stdout)["heard_hz"] - 660) < 10
        assert abs(json.loads(answered.strip().splitlines()[-1])["heard_hz"] - 440) < 10
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_sip_demo_runs_without_debian_tools_and_each_side_hears_the_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sip", "demo", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("account ") and "password=" in line for line in lines) == 2
    result = json.loads(lines[-1])
    assert abs(result["alice_heard_hz"] - 660) < 10 and abs(result["bob_heard_hz"] - 440) < 10
    assert result["rtp_relayed"] >= 150

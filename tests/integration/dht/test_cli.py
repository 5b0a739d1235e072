"""The CLI as a person uses it: init, id, run (SIGTERM), record put/get; real processes.

The demo has its own test: tests/integration/app/test_demo.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

WAIT = 60  # bound on any one command, not a speed assertion


def p2pnode(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("P2PNODE_HOME", None)
    command = [sys.executable, "-m", "p2pnode", *args]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=WAIT, env=env
    )


def test_init_id_run_put_get(tmp_path: Path) -> None:
    server, user = tmp_path / "server", tmp_path / "user"
    assert p2pnode("init", "--home", str(server)).returncode == 0
    created = p2pnode("init", "--home", str(user))
    assert created.returncode == 0 and "created a new identity" in created.stdout
    again = p2pnode("init", "--home", str(user))
    assert "already initialised" in again.stdout
    shown = p2pnode("id", "--home", str(user))
    peer_id = re.search(r"peer id:\s+(\S+)", shown.stdout)
    assert peer_id is not None and re.search(r"node id:\s+[0-9a-f]{40}", shown.stdout)

    run = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--home", str(server), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        address = None
        for _ in range(10):
            line = run.stdout.readline()
            found = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
            if found:
                address = found.group(1)
                break
        assert address is not None
        put = p2pnode(
            "record",
            "put",
            "--home",
            str(user),
            "--bootstrap",
            address,
            "--kind",
            "presence",
            "--subject",
            "online",
            "--payload",
            "hello from the CLI",
        )
        assert put.returncode == 0, put.stderr
        assert "stored: 1 of 1" in put.stdout
        got = p2pnode(
            "record",
            "get",
            "--bootstrap",
            address,
            "--kind",
            "presence",
            "--owner",
            peer_id.group(1),
            "--subject",
            "online",
        )
        assert got.returncode == 0, got.stderr
        assert "hello from the CLI" in got.stdout and "signature verified" in got.stdout
        missing = p2pnode(
            "record",
            "get",
            "--bootstrap",
            address,
            "--kind",
            "presence",
            "--owner",
            peer_id.group(1),
            "--subject",
            "nothing-here",
        )
        assert missing.returncode == 1 and "no valid record" in missing.stdout
    finally:
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=WAIT)
    assert run.returncode == 0, err
    assert "shutting down" in out
    assert (server / "dht-contacts.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["record", "get", "--bootstrap", "127.0.0.1:9", "--kind", "presence", "--subject", "x"],
            "--owner PEERID is needed",
        ),
        (
            ["record", "get", "--bootstrap", "127.0.0.1:9", "--kind", "nope", "--subject", "x"],
            "unknown kind",
        ),
        (
            [
                "record",
                "get",
                "--bootstrap",
                "nohost:1",
                "--kind",
                "presence",
                "--owner",
                "x",
                "--subject",
                "x",
            ],
            "not a peer id",
        ),
        (["record", "get", "--kind", "name-claim", "--subject", "x"], "--bootstrap"),
        (["run", "--listen", "127.0.0.1:99999"], "out of range"),
    ],
)
def test_bad_input_gives_one_clear_line(args: list[str], message: str) -> None:
    result = p2pnode(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_record_put_needs_an_identity(tmp_path: Path) -> None:
    result = p2pnode(
        "record",
        "put",
        "--home",
        str(tmp_path / "empty"),
        "--bootstrap",
        "127.0.0.1:9",
        "--kind",
        "presence",
        "--subject",
        "s",
        "--payload",
        "p",
    )
    assert result.returncode == 2 and "p2pnode init" in result.stderr

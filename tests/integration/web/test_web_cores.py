"""The app server's pure parts: one-time links and sessions in virtual time, and the identity
backup format (round trip, wrong passphrase, tampering, a total decoder under hypothesis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.app.web.backup import BackupDecodeError, open_backup, read_seed, seal_backup
from p2pnode.app.web.sessions import MAX_SESSIONS, TICKET_TTL, SessionTable
from p2pnode.identity import Identity

SEED = bytes(range(32))
# the real limits (MODERATE, ~1.3 s each) are used by the browser test's export


def test_a_ticket_opens_one_session_once_and_expires() -> None:
    table = SessionTable(idle=60.0)
    table.add_ticket("t1", now=0.0)
    assert table.spend_ticket("t1", "s1", now=1.0)
    assert not table.spend_ticket("t1", "s2", now=1.0)  # spent
    table.add_ticket("t2", now=0.0)
    assert not table.spend_ticket("t2", "s3", now=TICKET_TTL + 1)  # expired
    assert not table.spend_ticket("", "s4", now=1.0)
    assert table.check("s1", now=30.0)
    assert table.check("s1", now=89.0)  # refreshed at 30
    assert not table.check("s1", now=200.0)  # idle for longer than 60 s
    assert not table.check("s2", now=1.0)
    assert table.statistics().refused_tickets == 3


def test_sessions_are_bounded_and_the_oldest_goes() -> None:
    table = SessionTable(idle=1e9)
    for n in range(MAX_SESSIONS + 1):
        table.add_ticket(f"t{n}", now=float(n))
        assert table.spend_ticket(f"t{n}", f"s{n}", now=float(n))
    assert table.statistics().sessions == MAX_SESSIONS
    assert not table.check("s0", now=100.0)
    assert table.check(f"s{MAX_SESSIONS}", now=100.0)


def test_backup_round_trip_and_refusals(tmp_path: Path) -> None:
    identity = Identity.generate(SEED)
    identity.save(tmp_path)
    assert read_seed(tmp_path) == SEED
    data = seal_backup(SEED, "correct horse", b"s" * 16, b"n" * 24, opslimit=1, memlimit=8192)
    opened = open_backup(data, "correct horse")
    assert opened.seed == SEED and opened.peer_id == identity.peer_id
    with pytest.raises(BackupDecodeError, match="wrong passphrase"):
        open_backup(data, "wrong horse")
    document = json.loads(data)
    other = Identity.generate(bytes(32)).peer_id
    with pytest.raises(BackupDecodeError, match="does not match"):
        open_backup(json.dumps({**document, "peer_id": other}).encode(), "correct horse")
    with pytest.raises(BackupDecodeError, match="limits"):
        open_backup(json.dumps({**document, "memlimit": 2**40}).encode(), "correct horse")
    flipped = bytearray(bytes.fromhex(document["box"]))
    flipped[-1] ^= 1
    with pytest.raises(BackupDecodeError):
        open_backup(json.dumps({**document, "box": flipped.hex()}).encode(), "correct horse")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_open_backup_is_total(data: bytes) -> None:
    with pytest.raises(BackupDecodeError):
        open_backup(data, "pass")


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["format", "kdf", "opslimit", "memlimit", "salt", "box", "peer_id"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=40) | st.lists(st.none()),
    )
)
def test_open_backup_is_total_on_json_objects(document: dict[str, object]) -> None:
    document = {"format": "p2pnode-identity-backup/1", "kdf": "argon2id13", **document}
    document["opslimit"] = 1
    document["memlimit"] = 8192
    with pytest.raises(BackupDecodeError):
        open_backup(json.dumps(document).encode(), "pass")


def test_app_command_without_a_running_node_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2pnode", "app", "--no-browser", "--home", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "no node is running" in result.stderr
    assert result.stdout == ""

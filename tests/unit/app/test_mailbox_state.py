"""``<home>/mailboxes.json``: the chosen and former mailboxes survive a restart; a
damaged file costs a new choice, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pnode.app.mailbox_state import (
    MailboxState,
    format_mailbox,
    load_mailbox_state,
    parse_mailbox,
    save_mailbox_state,
)
from p2pnode.identity import Identity
from p2pnode.sessions.mailbox_list import MailboxEntry

KEYS = [Identity.generate(bytes([40 + i]) * 32).public_key for i in range(4)]
CHOSEN = (MailboxEntry(KEYS[0], "127.0.0.1", 4001), MailboxEntry(KEYS[1], "2001:db8::1", 4002))
FORMER = ((MailboxEntry(KEYS[2], "127.0.0.1", 4003), 1_700_000_000.5),
          (MailboxEntry(KEYS[3], "127.0.0.1", 4004), None))  # fmt: skip


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "mailboxes.json"
    assert load_mailbox_state(path) == MailboxState()  # none yet
    save_mailbox_state(path, MailboxState(CHOSEN, FORMER))
    assert load_mailbox_state(path) == MailboxState(CHOSEN, FORMER)
    assert not path.with_suffix(".partial").exists()


def test_text_form_is_what_the_config_takes() -> None:
    for entry in CHOSEN:
        assert parse_mailbox(format_mailbox(entry)) == entry
    assert format_mailbox(CHOSEN[1]).endswith("@[2001:db8::1]:4002")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"version": 2, "chosen": [], "former": []}',
        b'{"version": 1, "chosen": "x", "former": []}',
        b'{"version": 1, "chosen": ["nope@127.0.0.1:1"], "former": []}',
        b'{"version": 1, "chosen": [], "former": [["x"]]}',
        b'{"version": 1, "chosen": [], "former": [[1, 2]]}',
        json.dumps(
            {"version": 1, "chosen": [], "former": [[format_mailbox(CHOSEN[0]), True]]}
        ).encode(),
        b" " * 70_000,
    ],
)
def test_damaged_file_gives_an_empty_state(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "mailboxes.json"
    path.write_bytes(content)
    assert load_mailbox_state(path) == MailboxState()

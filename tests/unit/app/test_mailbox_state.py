"""``<home>/mailboxes.json``: the chosen and former mailboxes survive a restart; a
damaged file costs a new choice, never a crash."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from p2pnode.app.mailbox_state import (
    MAILBOXES_FILE,
    MailboxState,
    format_mailbox,
    load_mailbox_state,
    parse_mailbox,
    save_mailbox_state,
)
from p2pnode.app.peer_chat import ChatService
from p2pnode.app.peer_config import ChatSection
from p2pnode.identity import Identity
from p2pnode.sessions.mailbox_choice import FORMER_KEPT
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


def chat_service(home: Path, pinned: tuple[MailboxEntry, ...]) -> ChatService:
    section = ChatSection.model_validate(
        {"enabled": True, "mailboxes": [format_mailbox(m) for m in pinned]}
    )
    nothing: Any = None  # the start-up choice reads only the home and the config
    return ChatService(home, Identity.generate(), nothing, nothing, section, emit=print)


def test_start_takes_the_config_first_then_the_saved_choice(tmp_path: Path) -> None:
    save_mailbox_state(tmp_path / MAILBOXES_FILE, MailboxState(CHOSEN, FORMER))
    pinned = (FORMER[1][0],)  # named in the config now: current, not former
    initial, searching = chat_service(tmp_path, pinned)._initial_mailboxes()
    assert searching and initial.mailboxes == pinned + CHOSEN
    assert initial.former == FORMER[:1]


def test_three_in_the_config_retire_the_saved_choice(tmp_path: Path) -> None:
    save_mailbox_state(tmp_path / MAILBOXES_FILE, MailboxState(CHOSEN, ()))
    pinned = tuple(MailboxEntry(k, "127.0.0.1", 5000 + i) for i, k in enumerate(KEYS[1:]))
    before = time.time()
    initial, searching = chat_service(tmp_path, pinned)._initial_mailboxes()
    assert not searching and initial.mailboxes == pinned
    # the saved one not in the config is drained for its retention, from today on
    ((entry, until),) = initial.former
    assert entry == CHOSEN[0] and before + FORMER_KEPT <= until <= time.time() + FORMER_KEPT
    saved = load_mailbox_state(tmp_path / MAILBOXES_FILE)
    assert saved.chosen == () and saved.former == ((CHOSEN[0], until),)


@pytest.mark.parametrize("version", [True, 1.0, "1", None])
def test_only_the_integer_1_is_version_1(
    tmp_path: Path, version: object, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / MAILBOXES_FILE
    save_mailbox_state(path, MailboxState(CHOSEN, FORMER))
    assert load_mailbox_state(path).chosen == CHOSEN
    data = json.loads(path.read_bytes())
    data["version"] = version  # True == 1 and 1.0 == 1 in Python: refused all the same
    path.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        assert load_mailbox_state(path) == MailboxState()
    assert f"ignoring {MAILBOXES_FILE}: ValueError" in caplog.text

"""Contact requests, blocks and reach settings kept in the home (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pnode.app.peer_contacts import (
    MAX_PREVIEW,
    MAX_REQUESTS,
    REQUESTS_FILE,
    SETTINGS_FILE,
    PresenceVisibility,
    ReachSettings,
    RequestBook,
    Screening,
)
from p2pnode.identity import Identity
from p2pnode.sessions.call_config import NonContactPolicy

PEERS = [Identity.generate(bytes([i]) * 32).peer_id for i in range(1, 4)]


def test_a_stranger_becomes_a_request_kept_across_a_restart(tmp_path: Path) -> None:
    book = RequestBook(tmp_path)
    book.load()
    carol = PEERS[0]
    assert book.screen(carol, 1.0, known=True, text="hi") == (Screening.SHOW, None)
    screening, request = book.screen(carol, 2.0, known=False, text="hello " * 100)
    assert screening is Screening.REQUEST and request is not None
    assert (request.messages, request.calls, len(request.preview)) == (1, 0, MAX_PREVIEW)
    _, request = book.screen(carol, 3.0, known=False, call=True)
    assert request is not None and (request.messages, request.calls) == (1, 1)
    assert request.first_at == 2.0 and request.last_at == 3.0

    again = RequestBook(tmp_path)  # a restarted node
    again.load()
    assert again.pending() == (request,)
    assert again.take(carol) == request and again.pending() == ()


def test_declined_is_blocked_until_taken(tmp_path: Path) -> None:
    book = RequestBook(tmp_path)
    book.load()
    carol = PEERS[1]
    book.screen(carol, 1.0, known=False, text="buy now")
    book.block(carol)
    assert book.pending() == ()
    assert book.screen(carol, 2.0, known=False, text="again") == (Screening.BLOCKED, None)
    assert book.screen(carol, 2.0, known=True, text="even known") == (Screening.BLOCKED, None)
    reloaded = RequestBook(tmp_path)
    reloaded.load()
    assert reloaded.is_blocked(carol)
    reloaded.take(carol)  # added as a contact by hand: the block is lifted
    assert reloaded.screen(carol, 3.0, known=True)[0] is Screening.SHOW
    reloaded.block(carol)
    assert reloaded.unblock(carol) and not reloaded.unblock(carol)
    assert reloaded.screen(carol, 4.0, known=False, text="hi")[0] is Screening.REQUEST
    with pytest.raises(ValueError):
        book.block("not a peer id")


def test_requests_are_bounded_oldest_out(tmp_path: Path) -> None:
    book = RequestBook(tmp_path)
    book.load()
    strangers = [Identity.generate(i.to_bytes(32, "big")).peer_id for i in range(MAX_REQUESTS + 5)]
    for t, peer_id in enumerate(strangers):
        book.screen(peer_id, float(t), known=False, text="x")
    pending = book.pending()
    assert len(pending) == MAX_REQUESTS
    assert pending[0].peer_id == strangers[-1]  # the latest first
    assert {r.peer_id for r in pending} == set(strangers[5:])


def test_settings_persist_and_junk_files_are_ignored(tmp_path: Path) -> None:
    book = RequestBook(tmp_path)
    book.load()
    assert book.settings == ReachSettings(PresenceVisibility.EVERYONE, None)
    chosen = ReachSettings(PresenceVisibility.CONTACTS, NonContactPolicy.REQUEST, True)
    book.set_settings(chosen)
    reloaded = RequestBook(tmp_path)
    reloaded.load()
    assert reloaded.settings == chosen

    (tmp_path / SETTINGS_FILE).write_text('{"presence_visibility": "martians"}')
    good = {"peer_id": PEERS[2], "first_at": 1, "last_at": 2, "messages": 1, "calls": 0}
    junk_requests = [{"peer_id": "x"}, 7, {**good, "preview": "ok"}]
    (tmp_path / REQUESTS_FILE).write_text(
        json.dumps({"requests": junk_requests, "blocked": ["nope", 3]})
    )
    junk = RequestBook(tmp_path)
    junk.load()
    assert junk.settings == ReachSettings()
    assert [r.peer_id for r in junk.pending()] == [PEERS[2]] and junk.blocked() == ()
    (tmp_path / REQUESTS_FILE).write_text("{not json")
    junk.load()
    assert junk.pending() == ()

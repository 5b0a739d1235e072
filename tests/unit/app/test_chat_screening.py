"""The chat service's screening of shown messages and its gap event (no network).

``ChatService._on_event`` is fed the messaging layer's events directly: a stranger's
message goes to the inbox flagged as a request (announced), a blocked peer's is
neither kept nor announced, a gap is announced by the peer id the page shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from p2pnode.app.peer_chat import ChatService, ConversationGap
from p2pnode.app.peer_config import ChatSection
from p2pnode.app.peer_contacts import RequestBook, Screening
from p2pnode.app.services import DhtService
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.identity import Identity
from p2pnode.sessions.messaging import GapDetected, MessageShown
from p2pnode.sessions.store import Direction, MessageRow

CAROL, DAVE, ERIN = (Identity.generate(bytes([i]) * 32) for i in (21, 22, 23))


def row(sender: Identity, text: str) -> MessageRow:
    return MessageRow(
        bytes(16), sender.public_key, Direction.IN, 1, bytes(32), bytes(32), text, 0, True, True
    )


def test_strangers_are_requests_blocked_peers_vanish_gaps_name_the_peer(tmp_path: Path) -> None:
    events: list[object] = []
    chat = ChatService(
        tmp_path,
        Identity.generate(bytes([20]) * 32),
        cast(DhtService, None),
        cast(SignallingService, None),
        ChatSection.model_validate({"enabled": True}),
        emit=events.append,
    )
    book = RequestBook(tmp_path)
    book.load()
    book.block(DAVE.peer_id)

    def screen(peer_id: str, *, known: bool, text: str | None = None) -> Screening:
        return book.screen(peer_id, 1.0, known=known, text=text)[0]

    chat.screen, chat.blocked = screen, book.is_blocked
    chat._on_event(MessageShown(row(ERIN, "a friend"), request=False))
    chat._on_event(MessageShown(row(CAROL, "a stranger"), request=True))
    chat._on_event(MessageShown(row(DAVE, "declined"), request=True))
    assert [(e.message.text, e.request) for e in chat.inbox] == [
        ("a friend", False),
        ("a stranger", True),
    ]
    assert [p.peer_id for p in book.pending()] == [CAROL.peer_id]
    assert chat.blocked_dropped == 1
    assert len(events) == 2 and all(isinstance(e, MessageShown) for e in events)

    chat._on_event(GapDetected(ERIN.public_key, 2, 4))
    chat._on_event(GapDetected(DAVE.public_key, 2, 4))  # a blocked peer's: not announced
    assert events[-1] == ConversationGap(ERIN.peer_id, 2, 4) and len(events) == 3

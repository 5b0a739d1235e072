"""``<home>/mailboxes.json``: the mailboxes a peer chose itself, across restarts.

Why a file and not the config: the config holds what the operator named (pinned,
always first); the chosen ones are the node's own decision and must stay stable
across restarts, or every restart would move the peer's mail and leave senders a
stale list. Former mailboxes are kept with the time until which they are drained
(a replaced mailbox may still hold our mail). The time each current mailbox joined
our list is kept too (``since``: what the API and the page show), so a restart does
not make an old mailbox look new.

Invariants: ``load_mailbox_state`` never raises on what it reads (a missing,
oversized or damaged file gives an empty state, logged once); ``save_mailbox_state``
replaces the file atomically; at most ``MAX_FORMER`` former mailboxes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from p2pnode.app.config import hostport
from p2pnode.identity import peer_id_for, public_key_from_peer_id
from p2pnode.sessions.mailbox_list import MAX_MAILBOXES, MailboxEntry

__all__ = [
    "MAILBOXES_FILE",
    "MAX_FORMER",
    "MAX_MAILBOXES_FILE",
    "MailboxState",
    "MailboxView",
    "format_mailbox",
    "load_mailbox_state",
    "mailbox_view",
    "parse_mailbox",
    "save_mailbox_state",
]

logger = logging.getLogger(__name__)

MAILBOXES_FILE = "mailboxes.json"  # our chosen and former mailboxes, across restarts
MAX_MAILBOXES_FILE = 64 * 1024  # bytes read from it at most
MAX_FORMER = 16  # former mailboxes remembered (each drained until its retention ends)


def parse_mailbox(text: str) -> MailboxEntry:
    """``PEERID@HOST:PORT`` (checked by the config) as a ``MailboxEntry``."""
    peer_id, _, address = text.partition("@")
    host, port = hostport(address)
    return MailboxEntry(public_key_from_peer_id(peer_id), host, port)


def format_mailbox(entry: MailboxEntry) -> str:
    """The ``PEERID@HOST:PORT`` text ``parse_mailbox`` reads."""
    host = f"[{entry.host}]" if ":" in entry.host else entry.host
    return f"{peer_id_for(entry.key)}@{host}:{entry.port}"


@dataclass(frozen=True)
class MailboxState:
    """What ``<home>/mailboxes.json`` keeps: the mailboxes we chose (not the config's)
    and the former ones, each drained until its time (None: no end known)."""

    chosen: tuple[MailboxEntry, ...] = ()
    former: tuple[tuple[MailboxEntry, float | None], ...] = ()
    since: tuple[tuple[MailboxEntry, float], ...] = ()  # current ones (pinned too): joined at


@dataclass(frozen=True)
class MailboxView:
    """One of our current mailboxes as the control API and the WebSocket show it.

    ``reachable`` is the app's own last TCP check of the address (None: not checked
    yet); the messaging service replaces a mailbox only after a day of failures, so a
    person sees an unreachable one long before it is replaced."""

    peer_id: str
    address: str  # HOST:PORT
    pinned: bool  # named in [chat] mailboxes (never replaced); else chosen by the node
    since: float  # unix time it joined our list
    reachable: bool | None
    checked_at: float | None  # unix time of that check


def mailbox_view(
    entry: MailboxEntry,
    pinned: bool,
    since: float,
    checked: Mapping[bytes, tuple[bool, float]],
) -> MailboxView:
    """``entry`` as the API shows it; ``checked``: the last check per mailbox key."""
    reachable, at = checked.get(entry.key, (None, None))
    address = format_mailbox(entry).partition("@")[2]
    return MailboxView(peer_id_for(entry.key), address, pinned, since, reachable, at)


def load_mailbox_state(path: Path) -> MailboxState:
    """The saved state, or an empty one when the file is missing or unreadable (logged:
    losing it costs a new choice, never mail, since the former list is drained anyway)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_MAILBOXES_FILE + 1)
    except FileNotFoundError:
        return MailboxState()
    except OSError as error:
        logger.warning("cannot read %s: %s", path.name, error.strerror)
        return MailboxState()
    try:
        if len(raw) > MAX_MAILBOXES_FILE:
            raise ValueError("too large")
        data = json.loads(raw)
        if type(data) is not dict or type(data.get("version")) is not int or data["version"] != 1:
            raise ValueError("not version 1")  # type(): true and 1.0 equal 1 but are not it
        chosen = tuple(parse_mailbox(text) for text in _strings(data.get("chosen")))
        former: list[tuple[MailboxEntry, float | None]] = []
        for item in _list(data.get("former")):
            text, until = _list(item)
            end = float(until) if isinstance(until, int | float) else None
            if type(text) is not str or type(until) is bool or (end is None and until is not None):
                raise ValueError("a former mailbox is not [text, time]")
            former.append((parse_mailbox(text), end))
        since: list[tuple[MailboxEntry, float]] = []
        for item in _list(data.get("since", [])):
            text, when = _list(item)
            if type(text) is not str or type(when) not in (int, float):
                raise ValueError("a since entry is not [text, time]")
            since.append((parse_mailbox(text), float(when)))  # type: ignore[arg-type]
    except ValueError as error:  # json, shapes, keys and addresses all raise ValueError
        logger.warning("ignoring %s: %s", path.name, type(error).__name__)
        return MailboxState()
    return MailboxState(
        chosen[:MAX_MAILBOXES], tuple(former[:MAX_FORMER]), tuple(since[:MAX_MAILBOXES])
    )


def _list(value: object) -> list[object]:
    if type(value) is not list:
        raise ValueError("not a list")
    return value


def _strings(value: object) -> list[str]:
    items = _list(value)
    if not all(type(item) is str for item in items):
        raise ValueError("not a list of strings")
    return [str(item) for item in items]


def save_mailbox_state(path: Path, state: MailboxState) -> None:
    """Write atomically (a crash leaves the old file or the new one, never half)."""
    data = {
        "version": 1,
        "chosen": [format_mailbox(m) for m in state.chosen],
        "former": [[format_mailbox(m), until] for m, until in state.former[:MAX_FORMER]],
        "since": [[format_mailbox(m), when] for m, when in state.since[:MAX_MAILBOXES]],
    }
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as file:
        json.dump(data, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)

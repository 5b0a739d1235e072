"""Who may reach us: contact requests from strangers, blocked peers, and reach settings.

A stranger is a peer that is not in our contacts and that we never wrote to. Its
messages and calls are not shown as a normal conversation or ring: they make a
contact request that the person accepts (the peer becomes a contact) or declines
(the peer is blocked: its online messages and calls are dropped, mailbox copies
are stored but never shown). The settings say who may see our presence
(everyone, contacts, nobody: the homes refuse other watchers and the DHT's
public record says offline) and who may call (anyone rings; contacts only, the
others waiting silently as requests; contacts only, the others refused) and
whether calls are answered automatically.

Why a file in the home and not the chat store: requests come from calls too, and a
node without ``[chat]`` still has contacts, presence and calls. Both files are
written whole and replaced atomically; an unreadable one is ignored with a warning
(the person loses pending requests, never their contacts, kept in contacts.json).

Everything a stranger can make us hold is bounded: ``MAX_REQUESTS`` pending
requests (the oldest goes), ``MAX_PREVIEW`` characters of the last text each.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from p2pnode.identity import public_key_from_peer_id
from p2pnode.sessions.call_config import NonContactPolicy

__all__ = [
    "MAX_BLOCKED",
    "MAX_PREVIEW",
    "MAX_REQUESTS",
    "REQUESTS_FILE",
    "SETTINGS_FILE",
    "ContactRequest",
    "ContactRequested",
    "PresenceVisibility",
    "ReachSettings",
    "RequestBook",
    "Screening",
]

logger = logging.getLogger(__name__)

REQUESTS_FILE = "contact-requests.json"
SETTINGS_FILE = "settings.json"
MAX_REQUESTS = 100  # pending requests kept; a new stranger beyond pushes out the oldest
MAX_BLOCKED = 10_000  # declined peers kept (the person's own doing, not a stranger's)
MAX_PREVIEW = 140  # characters of a stranger's last text shown with its request


class PresenceVisibility(enum.Enum):
    EVERYONE = "everyone"
    CONTACTS = "contacts"
    NOBODY = "nobody"


class Screening(enum.Enum):
    """What to do with a message or call from one peer."""

    SHOW = "show"  # a contact (or someone we wrote to): a normal conversation or ring
    REQUEST = "request"  # a stranger: noted as a contact request
    BLOCKED = "blocked"  # declined before: dropped


@dataclass(frozen=True)
class ReachSettings:
    presence_visibility: PresenceVisibility = PresenceVisibility.EVERYONE
    who_may_call: NonContactPolicy | None = None  # None: the config's [calls] non_contacts
    auto_answer: bool | None = None  # None: the config's [calls] auto_answer


@dataclass(frozen=True)
class ContactRequest:
    peer_id: str
    first_at: float
    last_at: float
    messages: int
    calls: int
    preview: str  # the last text, cut to MAX_PREVIEW characters


@dataclass(frozen=True)
class ContactRequested:
    """Event: a stranger wrote or called (the Contacts view shows it at once)."""

    peer_id: str
    messages: int
    calls: int
    preview: str


def _peer_id(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not a peer id")
    public_key_from_peer_id(value)
    return value


def _request(data: Any) -> ContactRequest:
    """A request as stored (total: any junk gives ``ValueError``/``TypeError``/``KeyError``)."""
    return ContactRequest(
        _peer_id(data["peer_id"]),
        float(data["first_at"]),
        float(data["last_at"]),
        max(0, int(data["messages"])),
        max(0, int(data["calls"])),
        str(data["preview"])[:MAX_PREVIEW],
    )


def _write(path: Path, data: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(temporary, path)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("file=%s unreadable: starting without it", path.name)
        return None


class RequestBook:
    """Pending requests, blocked peers and the reach settings of one home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._requests: dict[str, ContactRequest] = {}
        self._blocked: set[str] = set()
        self._settings = ReachSettings()

    # -- persistence ----------------------------------------------------------------------

    def load(self) -> None:
        data = _read(self.home / REQUESTS_FILE)
        self._requests, self._blocked = {}, set()
        if isinstance(data, dict):
            for item in list(data.get("requests", ()))[:MAX_REQUESTS]:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    request = _request(item)
                    self._requests[request.peer_id] = request
            for item in list(data.get("blocked", ()))[:MAX_BLOCKED]:
                with contextlib.suppress(ValueError, TypeError):
                    self._blocked.add(_peer_id(item))
        settings = _read(self.home / SETTINGS_FILE)
        self._settings = ReachSettings()
        if isinstance(settings, dict):
            with contextlib.suppress(ValueError, TypeError, KeyError):
                policy = settings.get("who_may_call")
                auto = settings.get("auto_answer")
                self._settings = ReachSettings(
                    PresenceVisibility(settings.get("presence_visibility", "everyone")),
                    None if policy is None else NonContactPolicy(policy),
                    auto if isinstance(auto, bool) else None,
                )

    def _save_requests(self) -> None:
        _write(
            self.home / REQUESTS_FILE,
            {
                "requests": [vars(r) for r in self._requests.values()],
                "blocked": sorted(self._blocked),
            },
        )

    # -- settings -------------------------------------------------------------------------

    @property
    def settings(self) -> ReachSettings:
        return self._settings

    def set_settings(self, settings: ReachSettings) -> None:
        self._settings = settings
        policy = settings.who_may_call
        _write(
            self.home / SETTINGS_FILE,
            {
                "presence_visibility": settings.presence_visibility.value,
                "who_may_call": None if policy is None else policy.value,
                "auto_answer": settings.auto_answer,
            },
        )

    # -- requests and blocks --------------------------------------------------------------

    def screen(
        self, peer_id: str, now: float, *, known: bool, text: str | None = None, call: bool = False
    ) -> tuple[Screening, ContactRequest | None]:
        """Whether a message (``text``) or a ``call`` from ``peer_id`` is shown, noted as a
        request (the request as it is now) or dropped; ``known``: a contact or someone
        we wrote to."""
        if peer_id in self._blocked:
            return Screening.BLOCKED, None
        if known:
            return Screening.SHOW, None
        old = self._requests.pop(peer_id, None)
        if old is None:
            old = ContactRequest(peer_id, now, now, 0, 0, "")
            while len(self._requests) >= MAX_REQUESTS:
                oldest = min(self._requests.values(), key=lambda r: r.last_at)
                del self._requests[oldest.peer_id]
        request = replace(
            old,
            last_at=now,
            messages=old.messages + (text is not None),
            calls=old.calls + call,
            preview=old.preview if text is None else text[:MAX_PREVIEW],
        )
        self._requests[peer_id] = request
        self._save_requests()
        return Screening.REQUEST, request

    def pending(self) -> tuple[ContactRequest, ...]:
        """Pending requests, the latest first."""
        return tuple(sorted(self._requests.values(), key=lambda r: -r.last_at))

    def take(self, peer_id: str) -> ContactRequest | None:
        """Forget the request of ``peer_id`` (accepted as a contact) and any block."""
        request = self._requests.pop(peer_id, None)
        blocked = peer_id in self._blocked
        self._blocked.discard(peer_id)
        if request is not None or blocked:
            self._save_requests()
        return request

    def block(self, peer_id: str) -> None:
        """Decline: forget its request, drop what it sends from now on."""
        _peer_id(peer_id)
        if peer_id not in self._blocked and len(self._blocked) >= MAX_BLOCKED:
            raise ValueError(f"at most {MAX_BLOCKED} blocked peers")
        self._requests.pop(peer_id, None)
        self._blocked.add(peer_id)
        self._save_requests()

    def unblock(self, peer_id: str) -> bool:
        """Lift a block (its next message or call is a request again); whether it was."""
        if peer_id not in self._blocked:
            return False
        self._blocked.discard(peer_id)
        self._save_requests()
        return True

    def is_blocked(self, peer_id: str) -> bool:
        return peer_id in self._blocked

    def blocked(self) -> tuple[str, ...]:
        return tuple(sorted(self._blocked))

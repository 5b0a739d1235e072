"""The presence of the peers we watch, as their homes report it, combined into one verdict.

Split out of :mod:`signalling`. Each watched peer may be attached at several
homes; each home's latest notice (attached or not, and the presence payload the
peer gave it) is kept, and :func:`signalling_events.presence_report` combines
them: online while attached at any home. A report is returned (for the event
stream) only when the combined verdict changes, so a peer seen by two homes
does not produce two events. Bounded by what we chose to watch: notices for a
peer we do not watch are ignored.
"""

from __future__ import annotations

from p2pnode.connectivity.homes_events import PresenceNotice
from p2pnode.connectivity.homewire import Code
from p2pnode.connectivity.signalling_events import PresenceChanged, presence_report
from p2pnode.identity import peer_id_for

__all__ = ["WatchedPresence"]

Address = tuple[str, int]


class WatchedPresence:
    """Per watched key: every home's last word, and the last combined report."""

    def __init__(self) -> None:
        self._homes: dict[bytes, dict[Address, tuple[bool, bytes]]] = {}
        self._reported: dict[bytes, PresenceChanged] = {}

    def follow(self, key: bytes) -> None:
        self._homes.setdefault(key, {})

    def forget(self, key: bytes) -> None:
        self._homes.pop(key, None)
        self._reported.pop(key, None)

    def following(self, key: bytes) -> bool:
        return key in self._homes

    def watched(self) -> list[bytes]:
        """The watched keys now (a copy: callers await between them)."""
        return list(self._homes)

    def report(self, key: bytes) -> PresenceChanged | None:
        """The last combined report for ``key`` (None before any notice)."""
        return self._reported.get(key)

    def notice(self, notice: PresenceNotice) -> PresenceChanged | None:
        """Record one home's notice; the new combined report if it changed, else None."""
        homes = self._homes.get(notice.target)
        if homes is None:
            return None
        homes[notice.home] = (notice.code is Code.OK and notice.attached, notice.presence)
        report = presence_report(peer_id_for(notice.target), homes.values())
        if self._reported.get(notice.target) == report:
            return None
        self._reported[notice.target] = report
        return report

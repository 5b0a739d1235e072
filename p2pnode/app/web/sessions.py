"""One-time links and browser sessions of the app server: pure bookkeeping, time as a parameter.

Why one-time links: the browser has no token; ``p2pnode app`` (who can read
the home's control token) asks the server for a ticket and opens
``/open?ticket=...``. The ticket is spent on first use and expires after
``TICKET_TTL`` seconds, so a link seen in a shell history or a process list
is useless afterwards. The session it becomes lives in an HttpOnly,
SameSite=Strict cookie and ends after ``idle`` seconds without a request.
Both tables are bounded: the oldest entry goes when a new one would exceed it.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["MAX_SESSIONS", "MAX_TICKETS", "TICKET_TTL", "SessionTable", "SessionsStatistics"]

TICKET_TTL = 120.0  # seconds a one-time link stays usable
MAX_TICKETS = 16  # unspent links held at most
MAX_SESSIONS = 32  # browser sessions held at most


@dataclass(frozen=True)
class SessionsStatistics:
    tickets: int
    sessions: int
    opened: int
    refused_tickets: int


class SessionTable:
    """Tickets -> sessions. Secrets come from the caller (``secrets.token_urlsafe``)."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._tickets: OrderedDict[str, float] = OrderedDict()  # ticket -> expires at
        self._sessions: OrderedDict[str, float] = OrderedDict()  # session -> last seen
        self._opened = 0
        self._refused = 0

    def add_ticket(self, ticket: str, now: float) -> None:
        self._tickets[ticket] = now + TICKET_TTL
        while len(self._tickets) > MAX_TICKETS:
            self._tickets.popitem(last=False)

    def spend_ticket(self, ticket: str, session: str, now: float) -> bool:
        """Turn a valid ticket into ``session``; False (and nothing held) otherwise."""
        expires = None
        for known in list(self._tickets):  # constant-time compare against each
            if hmac.compare_digest(known.encode(), ticket.encode()):
                expires = self._tickets.pop(known)
        if expires is None or expires < now:
            self._refused += 1
            return False
        self._sessions[session] = now
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        self._opened += 1
        return True

    def check(self, session: str, now: float) -> bool:
        """Whether ``session`` is live; a live one is refreshed, an idle one forgotten."""
        for known, seen in list(self._sessions.items()):
            if seen + self.idle < now:
                del self._sessions[known]
        found = next(
            (k for k in self._sessions if hmac.compare_digest(k.encode(), session.encode())),
            None,
        )
        if found is None:
            return False
        self._sessions[found] = now
        self._sessions.move_to_end(found)
        return True

    def statistics(self) -> SessionsStatistics:
        return SessionsStatistics(
            len(self._tickets), len(self._sessions), self._opened, self._refused
        )

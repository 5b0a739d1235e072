"""Grep-able refusal lines (fail2ban style): who was refused, why, at most once per interval.

Every authentication or abuse refusal in every layer (a TURN 401 with a wrong
password, a DHT STORE refused, a DNS client rate-limited, a control API request
without its token) logs through ``RefusalLog``:

    refused what=turn-auth reason=bad-integrity source=198.51.100.7 count=12

one line per (source, what) per interval, with the count since the last line,
so an operator's fail2ban filter can match ``refused .* source=<HOST>`` and a
flood cannot flood the log. It lives in ``nat`` because that is the bottom
layer every package may import. The clock is injected (cores stay testable);
the tracked sources are bounded (``max_sources``: the oldest are forgotten).
Values are never formatted with ``repr`` and are stripped of spaces and
control characters, so an attacker cannot forge a line.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MAX_SOURCES", "RefusalLog", "clean"]

MAX_SOURCES = 4096
_MAX_VALUE = 64


def clean(value: object) -> str:
    """A log-safe token: printable, no spaces or '=', at most 64 characters."""
    text = str(value)
    kept = "".join(c if c.isprintable() and not c.isspace() and c != "=" else "_" for c in text)
    return kept[:_MAX_VALUE] or "-"


class RefusalLog:
    """Logs refusals per (source, what) at most once per ``interval`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        *,
        interval: float = 60.0,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._interval = interval
        self._max = max_sources
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        self.total = 0

    def refused(self, what: str, reason: str, source: tuple[str, int] | str) -> bool:
        """Count one refusal; True if a line was logged for it."""
        self.total += 1
        host = source[0] if isinstance(source, tuple) else source
        key = (clean(host), clean(what))
        now = self._clock()
        last, count = self._seen.pop(key, (None, 0))
        count += 1
        if last is not None and now - last < self._interval:
            self._seen[key] = (last, count)
            return False
        self._seen[key] = (now, 0)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        self._logger.warning(
            "refused what=%s reason=%s source=%s count=%d", key[1], clean(reason), key[0], count
        )
        return True

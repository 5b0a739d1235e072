"""Count and log rejected network input without letting a flood flood the log.

Every socket handler in every layer drops bad packets through one of these: the
count per reason is exact (for metrics), the log line per reason appears at most
once per interval. It lives in ``nat`` because that is the bottom layer every
other package may import. The clock is injected so cores stay testable.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping

__all__ = ["DropCounter"]


class DropCounter:
    """Exact counts of dropped inputs by reason; one log line per reason per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        *,
        log_interval: float = 60.0,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._log_interval = log_interval
        self._counts: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}

    def drop(self, reason: str, detail: str = "") -> None:
        """Record one dropped input; log it unless this reason was logged recently."""
        self._counts[reason] += 1
        now = self._clock()
        last = self._last_logged.get(reason)
        if last is None or now - last >= self._log_interval:
            self._last_logged[reason] = now
            self._logger.warning(
                "dropped input: %s%s (%d so far)",
                reason,
                f" ({detail})" if detail else "",
                self._counts[reason],
            )

    def counts(self) -> Mapping[str, int]:
        """A snapshot copy of the counts by reason."""
        return dict(self._counts)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

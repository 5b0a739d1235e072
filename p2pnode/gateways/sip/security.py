"""The gateway's floor against SIP scanners and password crackers (Kamailio's recipe).

Why each rule:
- scanners announce themselves (``friendly-scanner``, ``sipvicious``,
  ``sipcli``, ``VaxSIPUserAgent``...): their requests are dropped without an
  answer, so the scan sees no SIP server at all;
- a password cracker needs many tries: ``max_ip_failures`` failed
  authentications from one IP within ``failure_window`` ban that IP for
  ``ban_seconds`` (all its requests dropped), and ``max_account_failures`` on one
  login from anywhere lock that login for ``ban_seconds`` (a distributed
  cracker); with generated ~117-bit passwords neither leaves any real chance;
- a flood from one source (pike): more than ``max_requests`` requests within
  ``density_window`` bans the source for ``ban_seconds``.

Every table is bounded (``MAX_TRACKED`` sources/logins, least recently seen
forgotten first). Sans-IO: ``now`` is a parameter.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "MAX_TRACKED",
    "SCANNER_AGENTS",
    "Decision",
    "Guard",
    "GuardConfig",
    "GuardStatistics",
]

MAX_TRACKED = 16_384
# Lower-case substrings of User-Agent (or From display) values scanners send.
SCANNER_AGENTS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "vaxipuseragent",
    "smap",
    "pplsip",
    "sipscan",
    "sip scan",
)


class Decision(enum.Enum):
    ACCEPT = "accept"
    SCANNER = "scanner user-agent"
    BANNED = "source banned"
    DENSITY = "request density"


@dataclass(frozen=True, slots=True)
class GuardConfig:
    max_ip_failures: int = 5
    max_account_failures: int = 20
    failure_window: float = 300.0
    ban_seconds: float = 600.0
    max_requests: int = 200
    density_window: float = 2.0
    drop_scanners: bool = True


@dataclass(frozen=True, slots=True)
class GuardStatistics:
    banned_sources: int
    locked_accounts: int
    dropped: tuple[tuple[str, int], ...]
    auth_failures: int


@dataclass(frozen=True, slots=True)
class _Counter:
    since: float
    count: int


def _bump(table: OrderedDict[str, _Counter], key: str, now: float, window: float) -> int:
    entry = table.pop(key, None)
    if entry is None or now - entry.since > window:
        entry = _Counter(now, 0)
    entry = _Counter(entry.since, entry.count + 1)
    table[key] = entry
    while len(table) > MAX_TRACKED:
        table.popitem(last=False)
    return entry.count


def is_scanner(user_agent: str | None) -> bool:
    if not user_agent:
        return False
    lowered = user_agent.lower()
    return any(name in lowered for name in SCANNER_AGENTS)


class Guard:
    """Per-source and per-login counters and bans (sans-IO, bounded)."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self._ip_failures: OrderedDict[str, _Counter] = OrderedDict()
        self._account_failures: OrderedDict[str, _Counter] = OrderedDict()
        self._density: OrderedDict[str, _Counter] = OrderedDict()
        self._banned: OrderedDict[str, float] = OrderedDict()  # ip -> until
        self._locked: OrderedDict[str, float] = OrderedDict()  # login -> until
        self._dropped: dict[Decision, int] = {}
        self.auth_failures = 0

    def _ban(self, table: OrderedDict[str, float], key: str, until: float) -> None:
        table.pop(key, None)
        table[key] = until
        while len(table) > MAX_TRACKED:
            table.popitem(last=False)

    def banned(self, ip: str, now: float) -> bool:
        until = self._banned.get(ip)
        if until is None:
            return False
        if now >= until:
            del self._banned[ip]
            return False
        return True

    def admit(self, ip: str, user_agent: str | None, now: float) -> Decision:
        """Whether a request from ``ip`` is processed at all (else dropped unanswered)."""
        decision = Decision.ACCEPT
        if self.banned(ip, now):
            decision = Decision.BANNED
        elif self.config.drop_scanners and is_scanner(user_agent):
            decision = Decision.SCANNER
        else:
            config = self.config
            if _bump(self._density, ip, now, config.density_window) > config.max_requests:
                self._ban(self._banned, ip, now + config.ban_seconds)
                decision = Decision.DENSITY
        if decision is not Decision.ACCEPT:
            self._dropped[decision] = self._dropped.get(decision, 0) + 1
        return decision

    def auth_failed(self, ip: str, login: str | None, now: float) -> bool:
        """Count one failed authentication; True when it banned ``ip`` just now."""
        config = self.config
        self.auth_failures += 1
        if login:
            count = _bump(self._account_failures, login, now, config.failure_window)
            if count >= config.max_account_failures:
                self._ban(self._locked, login, now + config.ban_seconds)
        count = _bump(self._ip_failures, ip, now, config.failure_window)
        if count >= config.max_ip_failures and not self.banned(ip, now):
            self._ban(self._banned, ip, now + config.ban_seconds)
            self._ip_failures.pop(ip, None)
            return True
        return False

    def account_locked(self, login: str, now: float) -> bool:
        until = self._locked.get(login)
        if until is None:
            return False
        if now >= until:
            del self._locked[login]
            return False
        return True

    def statistics(self, now: float) -> GuardStatistics:
        return GuardStatistics(
            banned_sources=sum(1 for until in self._banned.values() if until > now),
            locked_accounts=sum(1 for until in self._locked.values() if until > now),
            dropped=tuple(sorted((d.value, n) for d, n in self._dropped.items())),
            auth_failures=self.auth_failures,
        )

"""Reachability verdict sources: where a node's "am I publicly reachable?" comes from.

A ``VerdictSource`` is an async callable giving one ``Verdict`` per round: the
operator's assertion (``fixed_verdict``, ``--public IP``), dial-back checks
against given STUN servers (``stun_verdicts``), or against those plus the
dial-back servers supernodes advertise in the DHT (``learned_stun_verdicts``).
They sit next to ``nat.reachability`` (the estimator with its hysteresis) one
layer up, because learned servers come from the DHT. The supernode controller
(``connectivity.supernode``) consumes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from nat.reachability import Reachability, ReachabilityEstimator
from nat.runner import check_reachability

__all__ = [
    "MAX_LEARNED_SERVERS",
    "Verdict",
    "VerdictSource",
    "fixed_verdict",
    "learned_stun_verdicts",
    "stun_verdicts",
]

Address = tuple[str, int]


@dataclass(frozen=True)
class Verdict:
    """One reachability verdict and the IP it was obtained for (our public IP if PUBLIC)."""

    status: Reachability
    ip: str | None = None
    detail: str = ""


VerdictSource = Callable[[], Awaitable[Verdict]]


def fixed_verdict(status: Reachability, ip: str | None = None, detail: str = "") -> VerdictSource:
    """A verdict the operator (``--public IP``) or a test asserts, instead of measuring it."""

    async def source() -> Verdict:
        return Verdict(status, ip, detail or f"{status.value} (set by configuration)")

    return source


def _dial_back_verdicts(
    servers_now: Callable[[], tuple[tuple[Address, ...], str]],
    min_agree: int,
    none_known: str,
) -> VerdictSource:
    """Each call asks the servers ``servers_now()`` names (with a note on where they came
    from, or "") to dial us back; one estimator is kept across rounds."""
    estimator = ReachabilityEstimator(min_agree=min_agree)

    async def source() -> Verdict:
        servers, origin = servers_now()
        if not servers:
            status = estimator.status(asyncio.get_running_loop().time())
            return Verdict(status, None, none_known)
        report = await check_reachability(servers, estimator=estimator)
        votes = [v for v in report.votes if v is not None]
        where = f" ({origin})" if origin else ""
        detail = (
            f"{len(votes)} of {len(servers)} servers voted{where}, {report.min_agree} must agree"
        )
        return Verdict(report.status, report.local_address[0], detail)

    return source


def stun_verdicts(servers: Sequence[Address], *, min_agree: int = 3) -> VerdictSource:
    """Dial-back checks against ``servers`` only; ``min_agree`` is lowered to their number."""
    given = tuple(servers)
    return _dial_back_verdicts(
        lambda: (given, ""),
        min(min_agree, max(len(given), 1)),
        "no STUN servers to check against",
    )


MAX_LEARNED_SERVERS = 8  # dial-back servers asked per round, configured ones first


def learned_stun_verdicts(
    configured: Sequence[Address],
    learned: Callable[[], Sequence[Address]],
    *,
    min_agree: int = 3,
) -> VerdictSource:
    """Dial-back checks against ``configured`` servers plus those ``learned`` now.

    ``learned()`` gives the dial-back STUN servers of supernodes found in the DHT
    (``RelayFinder.dial_back_servers``), so a node needs no hand-given servers once
    a few supernodes exist. Unlike ``stun_verdicts``, ``min_agree`` is never
    lowered to the number of servers known: a verdict others rely on needs that
    many agreeing servers. Votes are kept per server across rounds (the
    estimator's hysteresis), so a decided status survives a round in which fewer
    servers are known, until its votes age out.
    """
    fixed = tuple(dict.fromkeys(configured))

    def servers_now() -> tuple[tuple[Address, ...], str]:
        found = tuple(dict.fromkeys(a for a in learned() if a not in fixed))
        servers = (fixed + found)[: max(MAX_LEARNED_SERVERS, len(fixed))]
        return servers, f"{len(fixed)} given, {len(servers) - len(fixed)} found in the DHT"

    return _dial_back_verdicts(
        servers_now,
        min_agree,
        "no dial-back STUN servers known yet (none given with --stun, no supernode "
        "advertising one found in the DHT)",
    )

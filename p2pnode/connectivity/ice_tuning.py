"""Five narrowly scoped adjustments to aioice's checks: no 500 ms stalls, prefer direct.

Why: aioice 0.13 skips the triggered check of RFC 8445 §7.3.1.4 when the pair
is already In-Progress. Behind NATs and through TURN that is the common case:
our first check to the peer was dropped (its NAT had no hole yet; the relay had
no permission yet), the peer's check then comes in through the hole it just
punched, and our pair waits for aioice's first retransmission, 500 ms later
(RFC 8489's default RTO). That is the ~34 ms / ~515 ms bimodal relayed set-up
the first batch measured, and the same stall on direct NATed paths.

RFC 8445 §7.3.1.4 says: for an In-Progress pair, cancel the transaction and
send a new check at once. We do the equivalent that needs no private state:
when a check comes in on a pair whose request is still in flight, we
*retransmit that request* now (a retransmission of the same transaction is
always allowed, RFC 8489 §6.2.1). Its response completes the original
transaction, so aioice's state machine sees nothing unusual.

A second adjustment, per connection (``hold_relayed_checks``): prefer direct.
aioice nominates aggressively (every check of the controlling agent carries
USE-CANDIDATE, RFC 8445 §8.1.1 as RFC 5245 allowed), so the first pair that
answers wins, and in the lab a relayed pair often answered a few ms before a
direct one through address-restricted NATs (measured: 3 of the 13 direct
pairs went relayed). For a connection registered here, the controlling agent
starts checks on pairs with a relayed candidate at either end only
``seconds`` after its first check; a direct pair that succeeds meanwhile is
nominated and the held checks are cancelled with the rest. Relayed-only pairs
pay at most the hold once, and not at all when one end offers no candidate
usable across sites (a UDP-blocked peer: no srflx, site-local host addresses).
Connections not registered behave exactly as aioice's.

Third, for registered connections only: an unanswered connectivity check is
retransmitted every ``FAST_RETRANSMIT`` (50 ms) until aioice's own first
retransmission at 500 ms (at most ``FAST_RETRANSMITS`` = 9 extra datagrams per
check). A check that met a NAT with no hole yet (symmetric behind one side,
address-restricted on the other: the hole opens when the other side's first
check leaves, which under load can be 100+ ms later) then gets through within
50 ms of the hole opening, well inside the relay hold; libwebrtc re-pings weak
candidate pairs every 48 ms for the same reason. With one extra retransmission
at 100 ms only, address-restricted-symmetric went relayed in 2 of 11 lab runs.

Fourth, for registered connections: once the controlling agent's check list
is completed, it starts no more checks. aioice answered a peer's late check
(still retransmitted through the peer's relay) with a triggered check carrying
USE-CANDIDATE, and its success replaced the nominated pair, so a link that had
completed on a direct pair moved to the relay (seen in 1 run of ~6 of the lab
matrix, for full-cone-port-restricted, address-restricted pairs...). And on
either side, a success or USE-CANDIDATE arriving after completion no longer
replaces the nominated pair (``check_complete``): each side keeps the pair it
completed on, normally the one the controlling side nominated.

Fifth, pacing (registered connections): aioice starts one new check per 20 ms
tick; RFC 8445 §14.2 allows Ta = 5 ms, so we start up to ``CHECKS_PER_TICK``
= 4 unstarted pairs per tick (a link has at most ~9 pairs). The srflx and
relay pairs that come after unreachable host pairs no longer wait 20-80 ms for
their turn (benchmark, 2 rounds x 21 pairs, 40 ms RTT, load ~8 on 2 cores:
p50 259-272 ms vs 304-312 ms with one pair per tick).

Scope: aioice's ``StunProtocol.request`` and ``Connection.check_incoming``,
``check_start``, ``check_complete`` and ``_check_periodic`` are wrapped once per
process (``install()`` is idempotent). The first adjustment then applies to
every aioice connection in the process (it only sends a retransmission RFC 8489
allows); the others only to connections registered with
``hold_relayed_checks``; no timer value is touched, TURN and
STUN-server transactions are unaffected (they do not receive checks). The
in-flight table is keyed by protocol object (weakly) and remote address, and
holds at most one request per pair, removed when its transaction ends; the
hold table is keyed weakly by connection.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import weakref
from typing import Any

from aioice import Candidate, ice, stun

__all__ = [
    "CHECKS_PER_TICK",
    "FAST_RETRANSMIT",
    "FAST_RETRANSMITS",
    "direct_possible",
    "early_retransmissions",
    "fast_retransmissions",
    "held_checks",
    "hold_relayed_checks",
    "install",
    "installed",
    "outside_reachable",
]

Address = tuple[str, int]

_inflight: weakref.WeakKeyDictionary[Any, dict[Address, stun.Message]] = weakref.WeakKeyDictionary()
_holds: weakref.WeakKeyDictionary[ice.Connection, float] = weakref.WeakKeyDictionary()
_first_check: weakref.WeakKeyDictionary[ice.Connection, float] = weakref.WeakKeyDictionary()
_state = {"installed": 0, "early": 0, "held": 0, "fast": 0, "after_completion": 0, "kept": 0}
FAST_RETRANSMIT = 0.05  # s between extra retransmissions of an unanswered check
FAST_RETRANSMITS = 9  # extra sends per check, all before aioice's own at 500 ms
CHECKS_PER_TICK = 4  # new checks per aioice 20 ms tick: Ta = 5 ms (RFC 8445 §14.2 minimum)


def hold_relayed_checks(connection: ice.Connection, seconds: float) -> None:
    """Register ``connection`` for adjustments 2-4 (hold, fast retransmissions, no checks
    after completion); while controlling, its relayed pairs' checks start ``seconds``
    after its first check (0: no hold, the other two still apply)."""
    if seconds < 0:
        raise ValueError("hold must be >= 0")
    _holds[connection] = seconds


def held_checks() -> int:
    """How many relayed-pair checks were held back in this process."""
    return _state["held"]


class _FastRetransmit:
    """The extra retransmissions of one check: a timer chain, cancelled when it ends."""

    def __init__(self, protocol: ice.StunProtocol, request: stun.Message, addr: Address) -> None:
        self.protocol, self.request, self.addr = protocol, request, addr
        self.left = FAST_RETRANSMITS
        self.handle = asyncio.get_running_loop().call_later(FAST_RETRANSMIT, self.fire)

    def fire(self) -> None:
        if _inflight.get(self.protocol, {}).get(self.addr) is not self.request:
            return
        _state["fast"] += 1
        self.protocol.send_stun(self.request, self.addr)
        self.left -= 1
        if self.left > 0:
            self.handle = asyncio.get_running_loop().call_later(FAST_RETRANSMIT, self.fire)

    def cancel(self) -> None:
        self.handle.cancel()


def fast_retransmissions() -> int:
    """How many extra early retransmissions were sent in this process."""
    return _state["fast"]


def _relayed(pair: ice.CandidatePair) -> bool:
    return "relay" in (pair.local_candidate.type, pair.remote_candidate.type)


# Addresses that only work inside one site: a host candidate there is no way in from outside.
_SITE_LOCAL = tuple(
    ipaddress.ip_network(text)
    for text in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def outside_reachable(candidate: Candidate) -> bool:
    """Could this candidate take part in a direct path between two sites?"""
    if candidate.type in ("srflx", "prflx"):
        return True
    if candidate.type != "host":
        return False
    try:
        address = ipaddress.ip_address(candidate.host)
    except ValueError:
        return True  # a name (mDNS): cannot tell, assume it could
    return not any(address in network for network in _SITE_LOCAL)


def direct_possible(connection: ice.Connection) -> bool:
    """Both ends offer a candidate usable across sites (else holding relayed checks is waste).

    A UDP-blocked peer gathers no server-reflexive candidate and its host
    candidates are site-local: no direct path exists, so its links skip the hold.
    (Two peers on one LAN are not seen here; their host pair answers in LAN time.)
    """
    local = any(outside_reachable(c) for c in connection.local_candidates)
    return local and any(outside_reachable(c) for c in connection.remote_candidates)


def installed() -> bool:
    return _state["installed"] != 0


def early_retransmissions() -> int:
    """How many checks were retransmitted early in this process (for benchmarks and tests)."""
    return _state["early"]


def install() -> None:
    """Wrap aioice once; safe to call from every PeerLink."""
    if _state["installed"]:
        return
    original_request = ice.StunProtocol.request
    original_check_incoming = ice.Connection.check_incoming
    original_check_start = ice.Connection.check_start
    original_check_periodic = ice.Connection._check_periodic
    original_check_complete = ice.Connection.check_complete

    @functools.wraps(original_check_complete)
    def check_complete(self: ice.Connection, pair: ice.CandidatePair) -> None:
        if self in _holds and self._check_list_done and pair.nominated:
            current = self._nominated.get(pair.component)
            if current is not None and current is not pair:
                # Either side: the nominated pair never changes once the list is done (a
                # late USE-CANDIDATE or a late in-flight success must not move the path).
                _state["kept"] += 1
                pair.nominated = False
        original_check_complete(self, pair)

    @functools.wraps(original_check_periodic)
    def check_periodic(self: ice.Connection) -> bool:
        if self not in _holds:
            return original_check_periodic(self)
        # aioice starts one check per 20 ms tick; RFC 8445 §14.2 allows Ta = 5 ms, so start
        # up to CHECKS_PER_TICK unstarted pairs, Waiting before Frozen, highest priority first.
        if self._check_list_done:
            return False
        started = 0
        for state in (ice.CandidatePair.State.WAITING, ice.CandidatePair.State.FROZEN):
            for pair in self._check_list:
                if pair.state == state and pair.task is None and started < CHECKS_PER_TICK:
                    self.check_start_task(pair)
                    started += 1
        return started > 0 or self._remote_candidates_expected()

    @functools.wraps(original_request)
    async def request(
        self: ice.StunProtocol,
        request: stun.Message,
        addr: Address,
        integrity_key: bytes | None = None,
        retransmissions: int | None = None,
    ) -> tuple[stun.Message, Address]:
        table = _inflight.setdefault(self, {})
        key = (addr[0], addr[1])
        table[key] = request
        fast = None
        if self.receiver is not None and self.receiver in _holds and integrity_key is not None:
            # One extra early retransmission of a check (see the module docstring).
            fast = _FastRetransmit(self, request, key)
        try:
            return await original_request(self, request, addr, integrity_key, retransmissions)
        finally:
            if fast is not None:
                fast.cancel()
            if table.get(key) is request:
                del table[key]

    @functools.wraps(original_check_incoming)
    def check_incoming(
        self: ice.Connection, message: stun.Message, addr: Address, protocol: ice.StunProtocol
    ) -> None:
        pending = _inflight.get(protocol, {}).get((addr[0], addr[1]))
        if pending is not None:
            # RFC 8445 §7.3.1.4: the pair is In-Progress; check again now, not in 500 ms.
            _state["early"] += 1
            protocol.send_stun(pending, addr)
        original_check_incoming(self, message, addr, protocol)

    @functools.wraps(original_check_start)
    async def check_start(self: ice.Connection, pair: ice.CandidatePair) -> None:
        hold = _holds.get(self)
        if (
            hold is not None
            and self.ice_controlling
            and self._check_list_done
            and pair.component in self._nominated
        ):
            # RFC 8445 §8.1.2: the controlling agent nominated; no check after that may
            # nominate again (aioice's triggered checks after completion did, and its
            # later success replaced the nominated pair: a direct link went relayed).
            _state["after_completion"] += 1
            pair.task = None
            return
        if hold:
            now = asyncio.get_running_loop().time()
            first = _first_check.setdefault(self, now)
            wait = first + hold - now
            if wait > 0 and self.ice_controlling and _relayed(pair) and direct_possible(self):
                _state["held"] += 1
                # In-Progress while held, so the pacing loop moves on to other pairs.
                self.check_state(pair, ice.CandidatePair.State.IN_PROGRESS)
                await asyncio.sleep(wait)
                if self._check_list_done or pair not in self._check_list:
                    pair.task = None
                    return
        await original_check_start(self, pair)

    ice.StunProtocol.request = request  # type: ignore[method-assign]
    ice.Connection.check_start = check_start  # type: ignore[method-assign]
    ice.Connection._check_periodic = check_periodic  # type: ignore[method-assign]
    ice.Connection.check_complete = check_complete  # type: ignore[method-assign]
    ice.Connection.check_incoming = check_incoming  # type: ignore[method-assign]
    _state["installed"] = 1

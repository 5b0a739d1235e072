"""One narrowly scoped adjustment to aioice: answer a peer's check with our own check at once.

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

Scope: ``StunProtocol.request`` and ``Connection.check_incoming`` of aioice's
``ice`` module are wrapped once per process (``install()`` is idempotent);
nothing else changes, no timer value is touched, TURN and STUN-server
transactions are unaffected (they do not receive checks). The in-flight table
is keyed by protocol object (weakly) and remote address, and holds at most one
request per pair, removed when its transaction ends.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from aioice import ice, stun

__all__ = ["early_retransmissions", "install", "installed"]

Address = tuple[str, int]

_inflight: weakref.WeakKeyDictionary[Any, dict[Address, stun.Message]] = weakref.WeakKeyDictionary()
_state = {"installed": False, "early": 0}


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
        try:
            return await original_request(self, request, addr, integrity_key, retransmissions)
        finally:
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

    ice.StunProtocol.request = request  # type: ignore[method-assign]
    ice.Connection.check_incoming = check_incoming  # type: ignore[method-assign]
    _state["installed"] = 1

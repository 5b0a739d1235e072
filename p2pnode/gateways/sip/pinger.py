"""OPTIONS pings from the gateway toward NATed devices and IP trunks (the asyncio side).

:class:`keepalive.NatKeepalive` decides who is due and who has missed too many
pings (sans-IO); this module sends the pings through the SIP stack, re-arms one
timer, and applies the verdicts: a silent device is unregistered, a silent trunk
is marked down in the router (never forgotten: pings go on, and the first answer
brings it back). Split out of :mod:`gateway` so the gateway stays the request
dispatcher; it owns every ping transaction it starts (``owns``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nat.logsafe import clean
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.keepalive import NatKeepalive, PingTarget, options_ping
from p2pnode.gateways.sip.registrar import Registrar
from p2pnode.gateways.sip.routing import Router
from p2pnode.gateways.sip.transaction import ClientKey
from p2pnode.gateways.sip.transport import SipStack

__all__ = ["TRUNK_PREFIX", "Pinger"]

_log = logging.getLogger("p2pnode.gateways.sip.gateway")  # the gateway's log lines, unchanged
TRUNK_PREFIX = "trunk:"  # keep-alive targets that are IP trunks, not registered devices


class Pinger:
    """Sends due OPTIONS pings and turns answers and time-outs into registrar/router changes."""

    def __init__(
        self,
        *,
        stack: SipStack,
        keepalive: NatKeepalive,
        domain: str,
        router: Router,
        registrar: Registrar,
        randbytes: Callable[[int], bytes],
        clock: Callable[[], float],
    ) -> None:
        self.keepalive = keepalive
        self._stack = stack
        self._domain = domain
        self._router = router
        self._registrar = registrar
        self._randbytes = randbytes
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._pings: dict[ClientKey, PingTarget] = {}
        self.address: tuple[str, int] | None = None  # the gateway's own, for Via

    @staticmethod
    def trunk_target(name: str, target: tuple[str, int]) -> PingTarget:
        uri = SipUri("sip", None, None, target[0], target[1])
        return PingTarget(TRUNK_PREFIX + name, uri, target, False)

    def watch_trunk(self, name: str, target: tuple[str, int], now: float) -> None:
        self.keepalive.watch(self.trunk_target(name, target), now)

    def watch(self, target: PingTarget, now: float) -> None:
        self.keepalive.watch(target, now)

    def owns(self, key: ClientKey) -> bool:
        """Whether this client transaction is one of our pings (not a call or a MESSAGE)."""
        return key in self._pings

    def arm(self) -> None:
        """One timer at the keep-alive table's next deadline (none when nothing is watched)."""
        deadline = self.keepalive.next_deadline()
        self.close()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._ping)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ping(self) -> None:
        self._timer = None
        assert self.address is not None
        for target in self.keepalive.due(self._clock()):
            token = self._randbytes(8).hex()
            request = options_ping(
                target,
                via=self._stack.transport.sent_by(target.source, target.reliable),
                from_uri=f"sip:gw@{self._domain}",
                branch_id=token,
                call_id=token + "@gw",
                tag=token[:8],
            )
            key = self._stack.send_request(request, target.source, reliable=target.reliable)
            self._pings[key] = target
        self.arm()

    def result(self, key: ClientKey, answered: bool) -> None:
        """A ping was answered (any response) or timed out."""
        target = self._pings.pop(key, None)
        if target is None:
            return
        trunk = target.username.removeprefix(TRUNK_PREFIX)
        is_trunk = target.username.startswith(TRUNK_PREFIX)
        if answered:
            self.keepalive.answered(target.key)
            if is_trunk and trunk in self._router.down_trunks:
                self._router.down_trunks.discard(trunk)
                _log.warning("sip trunk up name=%s", clean(trunk))
        elif self.keepalive.missed(target.key):
            if is_trunk:
                # A trunk is never forgotten: keep pinging, route nothing to it meanwhile.
                self._router.down_trunks.add(trunk)
                _log.warning("sip trunk down name=%s", clean(trunk))
                self.keepalive.watch(target, self._clock())
                self.arm()
                return
            self._registrar.remove(target.username, target.contact)
            _log.info("sip device silent, unregistered user=%s", clean(target.username))

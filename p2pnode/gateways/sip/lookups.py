"""INVITEs waiting for a DNS (RFC 3263) or ENUM answer before the B2BUA places them.

Why a table of its own: while the gateway resolves where a call goes, the
INVITE's server transaction is pending (100 Trying is out) but the B2BUA has
no call yet. A CANCEL arriving then must still match it (RFC 3261 §9.2: same
branch, method INVITE) and get 200 with a 487 for the INVITE; the look-up's
answer is then ignored, so no INVITE leaves after the caller gave up. The
look-up runs as a task that this table cancels; its continuation (placing the
call) runs in the same task right after the answer, so a CANCEL either finds
the look-up pending here or the call already in the B2BUA, never neither.

Bounded: ``limit`` look-ups in flight (the gateway answers 503 beyond), each
at most ``timeout`` seconds (then it counts as "no answer").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from p2pnode.directory.trust import Route
from p2pnode.gateways.sip.actions import Contact, Target
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.locate import Hop
from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.routing import Foreign, Refusal
from p2pnode.gateways.sip.transaction import ServerKey

__all__ = [
    "LOCATE_TIMEOUT",
    "MAX_LOCATING",
    "Locator",
    "NumberDirectory",
    "PendingLookups",
    "foreign_target",
    "invite_key_of",
    "number_route",
]

_log = logging.getLogger("p2pnode.gateways.sip.gateway")  # the gateway's log lines, unchanged
MAX_LOCATING = 256  # RFC 3263 / ENUM look-ups in flight; beyond, 503
LOCATE_TIMEOUT = 8.0


class NumberDirectory(Protocol):
    """What the gateway asks of :class:`p2pnode.directory.lookup.Directory` for numbers."""

    async def route(self, number: str) -> Route | None: ...


class Locator(Protocol):
    """RFC 3263 server location (``locate.locate``; tests pass a slow one)."""

    def __call__(self, uri: SipUri, *, random: Callable[[], float]) -> Awaitable[list[Hop]]: ...


def invite_key_of(cancel: ServerKey) -> ServerKey:
    """The INVITE server transaction a CANCEL names (RFC 3261 §9.2: branch and sent-by)."""
    return ServerKey(cancel.branch, cancel.sent_by, "INVITE")


class PendingLookups:
    """Look-up tasks by their INVITE's server key; ``cancel`` ends one before it places."""

    def __init__(self, *, limit: int = MAX_LOCATING) -> None:
        self.limit = limit
        self._tasks: dict[ServerKey, tuple[asyncio.Task[None], SipRequest]] = {}
        self.cancelled = 0  # look-ups whose caller sent CANCEL before the answer

    def __len__(self) -> int:
        return len(self._tasks)

    def full(self) -> bool:
        return len(self._tasks) >= self.limit

    def start(
        self, key: ServerKey, invite: SipRequest, work: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``work`` (look up, then place or refuse) unless the INVITE is cancelled first."""
        task = asyncio.get_running_loop().create_task(self._run(key, work))
        self._tasks[key] = (task, invite)

    async def _run(self, key: ServerKey, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        finally:
            entry = self._tasks.get(key)
            if entry is not None and entry[0] is asyncio.current_task():
                del self._tasks[key]

    def cancel(self, invite: ServerKey) -> SipRequest | None:
        """Stop the look-up of ``invite`` (its answer is never used) and return that INVITE;
        None when no look-up runs for it."""
        entry = self._tasks.pop(invite, None)
        if entry is None:
            return None
        entry[0].cancel()
        self.cancelled += 1
        return entry[1]

    def close(self) -> None:
        for task, _ in self._tasks.values():
            task.cancel()
        self._tasks.clear()


async def foreign_target(
    foreign: Foreign, locator: Locator, random: Callable[[], float]
) -> Target | Refusal:
    """RFC 3263: the other domain's first server as the call's target, or 404."""
    try:
        hops = await asyncio.wait_for(locator(foreign.uri, random=random), LOCATE_TIMEOUT)
    except TimeoutError:
        hops = []
    if not hops:
        return Refusal(404, "Not Found")
    contact = Contact(foreign.uri, (hops[0].host, hops[0].port), False)
    return Target(foreign.uri, (contact,), foreign.accounts)


async def number_route(numbers: NumberDirectory | None, number: str) -> Route | None:
    """Our trusted ENUM's route for ``number``; None when absent, failed or slow."""
    if numbers is None:
        return None
    try:
        return await asyncio.wait_for(numbers.route(number), LOCATE_TIMEOUT)
    except (TimeoutError, OSError, ValueError) as error:  # the trunk still carries it
        _log.info("sip enum lookup failed error=%s", type(error).__name__)
        return None

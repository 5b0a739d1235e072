"""The presence of the identities the SIP gateway hosts: online while a phone is registered.

M1's promise is that a desk phone's login is a full peer: the gateway holds
the account's identity (``hosted.identity_of``) and, while at least one
device of the account is registered, P2P peers see that identity online
(its PRESENCE record in the DHT: ``resolve.fetch_presence``); when the last
binding goes (unregister, expiry, removal on silence), offline.

Two parts. ``PresencePlan`` is the sans-IO decision: which account's status
to publish now, with which seq, fed by the registrar's change hook (a login
to look at) and asked with ``now`` and an ``online(login)`` predicate.
Bounded: one publish per account per ``MIN_INTERVAL`` (a flapping phone is
coalesced into its last state), an online record renewed every
``REPUBLISH`` (before its ``CONTACT_TTL`` runs out), seq the wall clock in
milliseconds and always above the last one (as ``SignallingService``
publishes its own PRESENCE, so the two never fight), at most ``MAX_TRACKED``
accounts remembered. ``SipPresence`` is the thin asyncio adapter: it hooks
the registrar (whose change hook also fires when the gateway's expiry timer
drops a lapsed binding), sweeps every ``CHECK_EVERY`` seconds for renewals and
as a backstop, signs and puts the records, and tells
attached sinks the status: the bridge's signalling of a ``bridge_hosted``
identity (``SignallingService.set_presence``), so its watchers learn it live
through its homes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2pnode.connectivity.contact import (
    CONTACT_TTL,
    PRESENCE_SUBJECT,
    Presence,
    PresenceStatus,
    encode_presence,
)
from p2pnode.connectivity.resolve import publish
from p2pnode.dht import DhtNode
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import SipGateway
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.records import RecordKind

__all__ = [
    "CHECK_EVERY",
    "MAX_PARALLEL",
    "MAX_TRACKED",
    "MIN_INTERVAL",
    "PUBLISH_TIMEOUT",
    "REPUBLISH",
    "PresencePlan",
    "PresencePublisher",
    "Publication",
    "SipPresence",
    "dht_publisher",
]

_log = logging.getLogger(__name__)

MIN_INTERVAL = 3.0  # seconds between two publishes of one account (flapping coalesces)
REPUBLISH = CONTACT_TTL / 2  # seconds: an online record is renewed well before it expires
CHECK_EVERY = 2.0  # seconds: a lapsed registration is noticed within this
MAX_TRACKED = 100_000  # accounts whose last publish is remembered (least recent go first)
PUBLISH_TIMEOUT = 10.0  # seconds one DHT put may take
MAX_PARALLEL = 16  # puts in flight at once


@dataclass(frozen=True, slots=True)
class Publication:
    """One record to sign and put: ``login``'s hosted identity is ``status`` (seq ``seq``)."""

    login: str
    status: PresenceStatus
    seq: int
    since: int  # unix seconds, the record's "since"


@dataclass(frozen=True, slots=True)
class _Published:
    status: PresenceStatus | None  # None: the last put failed (whatever it said is unknown)
    at: float  # when it was published (or last tried)
    seq: int
    since: int  # since when the status holds (a renewal keeps it)


class PresencePlan:
    """Which hosted identities' statuses are due (sans-IO: ``now`` is wall-clock seconds)."""

    def __init__(
        self,
        *,
        min_interval: float = MIN_INTERVAL,
        republish: float = REPUBLISH,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.min_interval = min_interval
        self.republish = republish
        self.max_tracked = max_tracked
        self._published: OrderedDict[str, _Published] = OrderedDict()
        self._active: set[str] = set()  # looked at by every sweep (online, or retrying)
        self._touched: set[str] = set()  # changed and not yet settled: looked at every round

    def touch(self, login: str) -> None:
        """The registrar says ``login``'s bindings changed: look at it at the next ``due``."""
        if len(self._active) < self.max_tracked:
            self._active.add(login)
            self._touched.add(login)

    def status(self, login: str) -> PresenceStatus | None:
        """What was last published for ``login`` (None: nothing yet)."""
        entry = self._published.get(login)
        return None if entry is None else entry.status

    def due(
        self, now: float, online: Callable[[str], bool], *, sweep: bool = False
    ) -> list[Publication]:
        """The publications to make now (each recorded as made; ``failed`` retries one).

        Only touched logins are looked at, unless ``sweep``: then every tracked one
        (lapsed registrations and renewals are no events; a round per REGISTER
        refresh stays cheap with thousands of phones online)."""
        out: list[Publication] = []
        for login in sorted(self._active if sweep else self._touched):
            want = PresenceStatus.ONLINE if online(login) else PresenceStatus.OFFLINE
            entry = self._published.get(login)
            if entry is None and want is PresenceStatus.OFFLINE:
                self._forget(login)  # never said online: nothing to withdraw
                continue
            if entry is not None:
                if now - entry.at < self.min_interval:
                    continue  # coalesce: looked at again once the interval has passed
                self._touched.discard(login)
                if entry.status is want:
                    if want is PresenceStatus.OFFLINE:
                        self._forget(login)  # withdrawn; the record ages out itself
                        continue
                    if now - entry.at < self.republish:
                        continue
            seq = max(0 if entry is None else entry.seq + 1, int(now * 1000))
            same = entry is not None and entry.status is want
            since = entry.since if entry is not None and same else int(now)
            self._touched.discard(login)
            self._remember(login, _Published(want, now, seq, since))
            out.append(Publication(login, want, seq, since))
        return out

    def failed(self, publication: Publication) -> None:
        """A put did not reach the network: decided and tried again after ``min_interval``
        (the seq is kept, so the next one is higher)."""
        entry = self._published.get(publication.login)
        if entry is not None and entry.seq == publication.seq:
            failed = _Published(None, entry.at, entry.seq, entry.since)
            self._remember(publication.login, failed)
        self._active.add(publication.login)
        self._touched.add(publication.login)

    def next_deadline(self, now: float) -> float | None:
        """When a coalesced change falls due after ``now`` (None: none is waiting; renewals
        and lapsed registrations are found by the sweeps). Call after ``due(now, ...)``."""
        times = [
            entry.at + self.min_interval
            for login in self._touched
            if (entry := self._published.get(login)) is not None
            and entry.at + self.min_interval > now
        ]
        return min(times, default=None)

    def _forget(self, login: str) -> None:
        self._active.discard(login)
        self._touched.discard(login)

    def _remember(self, login: str, entry: _Published) -> None:
        self._published.pop(login, None)
        self._published[login] = entry
        while len(self._published) > self.max_tracked:
            gone, _ = self._published.popitem(last=False)
            self._forget(gone)


PresencePublisher = Callable[[str, Publication], Awaitable[bool]]
"""Sign and put ``login``'s hosted identity's PRESENCE; True when stored somewhere."""


def dht_publisher(dht: DhtNode, accounts: AccountStore) -> PresencePublisher:
    """Publications as signed PRESENCE records of the account's hosted identity in ``dht``."""

    async def put(login: str, publication: Publication) -> bool:
        account = accounts.get(login)
        if account is None:
            return True  # the account was removed: nobody left to speak for
        payload = encode_presence(Presence(publication.status, "", publication.since))
        identity = identity_of(account)
        result = await publish(
            dht, identity, RecordKind.PRESENCE, PRESENCE_SUBJECT, payload, publication.seq
        )
        return result.stored > 0

    return put


StatusSink = Callable[[PresenceStatus], None]


class SipPresence:
    """Publishes the gateway's hosted identities' presence as its registrar changes."""

    def __init__(
        self,
        gateway: SipGateway,
        publisher: PresencePublisher,
        *,
        plan: PresencePlan | None = None,
        clock: Callable[[], float] = time.time,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.gateway = gateway
        self.plan = plan or PresencePlan()
        self._publisher = publisher
        self._clock = clock
        self._check_every = check_every
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sinks: dict[str, StatusSink] = {}
        self.published = 0
        self.failures = 0

    def start(self) -> None:
        self.gateway.registrar.listeners.append(self._changed)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.gateway.registrar.listeners.remove(self._changed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def attach(self, login: str, sink: StatusSink) -> None:
        """Also tell ``sink`` (a bridge's ``set_presence``) ``login``'s status: now (from
        the registrar: a hosted identity without a registered phone is offline, not the
        signalling's default) and on every publish (coalesced the same way)."""
        self._sinks[login] = sink
        sink(PresenceStatus.ONLINE if self._online(login) else PresenceStatus.OFFLINE)

    def detach(self, login: str, sink: StatusSink) -> None:
        if self._sinks.get(login) == sink:  # bound methods compare equal, never identical
            del self._sinks[login]

    def _changed(self, login: str) -> None:
        self.plan.touch(login)
        self._wake.set()

    def _online(self, login: str) -> bool:
        # The gateway's registrar runs on the loop's clock (``SipGateway._now``).
        now = asyncio.get_running_loop().time()
        return bool(self.gateway.registrar.bindings(login, now))

    async def _run(self) -> None:
        swept = float("-inf")
        while True:
            self._wake.clear()  # before looking: a change during the puts wakes the next round
            now = self._clock()
            sweep = now - swept >= self._check_every
            if sweep:
                swept = now
            due = self.plan.due(now, self._online, sweep=sweep)
            for start in range(0, len(due), MAX_PARALLEL):
                batch = due[start : start + MAX_PARALLEL]
                await asyncio.gather(*(self._publish(p) for p in batch))
            deadline = self.plan.next_deadline(now)
            wait = max(0.05, swept + self._check_every - now)  # renewals: swept
            if deadline is not None:
                wait = min(wait, max(0.05, deadline - now))
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _publish(self, publication: Publication) -> None:
        sink = self._sinks.get(publication.login)
        try:
            if sink is not None:
                sink(publication.status)
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                stored = await self._publisher(publication.login, publication)
        except Exception as error:  # one account's failure must not end presence for all
            _log.info("sip presence publish failed error=%s", type(error).__name__)
            stored = False
        if stored:
            self.published += 1
        else:
            self.failures += 1
            self.plan.failed(publication)

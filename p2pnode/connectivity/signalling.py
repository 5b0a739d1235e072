"""Sealed signalling as a service: homes kept, CONTACT published, envelopes sent and received.

``SignallingService`` is the thin asyncio adapter over the sans-IO cores: one
UDP socket, one timer, and the DHT for CONTACT records.

- A node behind NAT (``public=False``) runs a ``PeerCore``: it attaches to two
  homes found by ``find_homes`` and publishes a CONTACT listing them whenever
  they change (and every ``CONTACT_TTL / 2``).
- A public node or supernode (``public=True``) also runs a ``HomeCore`` on the
  same socket: it is its own home (its CONTACT lists itself) and accepts other
  peers' attach sessions. Requests go to the home core, answers to the peer
  core (``homewire.is_request``).

``send_signal(peer, payload)`` resolves the recipient's CONTACT (cached for
``CONTACT_CACHE`` seconds, fetched again after a failed send), seals the payload
to it and hands it to its homes in turn: it returns which home delivered it or
raises ``PeerUnreachableError``. ``receive()`` yields ``SignalDelivery`` (the sender's
peer id proven by its signature inside the envelope) after the replay window;
with ``send``, that makes the service a ``link_signal.SignalTransport`` for
PeerLink. ``watch(peer)`` follows a contact's presence; ``PresenceChanged``
events report it.

Service contract (structural, see p2pnode.app): ``name``, ``async start()``,
``async stop()``, ``statistics()`` -> a frozen snapshot, ``emit`` for events.
Every task has an owner: one runner task holding a TaskGroup, ended by stop().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence

from nat.drops import DropCounter
from p2pnode.connectivity.attach import (
    HomeConfig,
    HomeCore,
    LocalDelivery,
    PeerAttached,
)
from p2pnode.connectivity.contact import (
    CONTACT_TTL,
    Capability,
    Contact,
    HomeEntry,
    NatVerdict,
    Presence,
    PresenceStatus,
    encode_presence,
)
from p2pnode.connectivity.envelope import (
    ENVELOPE_ID_BYTES,
    seal_envelope,
)
from p2pnode.connectivity.homes import (
    Delivered,
    HomeAttached,
    HomeLost,
    HomesChanged,
    NeedCandidates,
    PeerConfig,
    PeerCore,
    PresenceNotice,
    SendDone,
)
from p2pnode.connectivity.homewire import Datagram, is_request
from p2pnode.connectivity.link_signal import SignalDelivery
from p2pnode.connectivity.resolve import (
    CONTACT_CACHE,
    ContactCache,
    FindHomes,
    contact_homes,
    fetch_contact,
    fetch_presence,
    publish_contact,
    relay_home_finder,
)
from p2pnode.connectivity.signal_channel import SignalChannel, SignalChannels
from p2pnode.connectivity.signal_inbox import SignalInbox
from p2pnode.connectivity.signalling_events import (
    ContactPublished,
    HomeDown,
    HomeUp,
    PeerAttachedHere,
    PeerLeftHere,
    PeerUnreachableError,
    PresenceChanged,
    SendReport,
    SignallingStatistics,
    address_text,
)
from p2pnode.connectivity.watched_presence import WatchedPresence
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity, peer_id_for, public_key_from_peer_id

__all__ = [
    "CONTACT_CACHE",
    "ContactPublished",
    "HomeDown",
    "HomeUp",
    "PeerAttachedHere",
    "PeerLeftHere",
    "PeerUnreachableError",
    "PresenceChanged",
    "SendReport",
    "SignalChannel",
    "SignallingService",
    "SignallingStatistics",
    "address_text",
    "contact_homes",
    "fetch_contact",
    "fetch_presence",
    "relay_home_finder",
]

logger = logging.getLogger(__name__)

CANDIDATE_RETRY = 10.0  # seconds between searches for homes while short of them
SEARCH_GAP = 2.0  # seconds at least between two searches
PUBLISH_GAP = 0.5  # seconds at least between two CONTACT puts
MAX_TICK = 0.1  # seconds between timer runs at most (retransmits are 0.25 s and up)

Address = tuple[str, int]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, service: SignallingService) -> None:
        self._service = service

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._service._datagram(data, (str(addr[0]), int(addr[1])))  # type: ignore[arg-type]

    def error_received(self, exc: Exception) -> None:
        logger.debug("signalling socket error: %s", exc)


class SignallingService:
    """One identity's signalling endpoint (see the module docstring)."""

    name = "signalling"

    def __init__(
        self,
        identity: Identity,
        dht: DhtNode,
        *,
        listen: Address = ("127.0.0.1", 0),
        advertise: Address | None = None,
        public: bool = False,
        find_homes: FindHomes | None = None,
        nat: NatVerdict = NatVerdict.UNKNOWN,
        capabilities: Capability = Capability.CHAT,
        device: bytes = b"",
        peer_config: PeerConfig | None = None,
        home_config: HomeConfig | None = None,
        emit: Callable[[object], None] | None = None,
    ) -> None:
        if not public and find_homes is None:
            raise ValueError("a node that is not public needs find_homes")
        self.identity = identity
        self.dht = dht
        self.listen = listen
        self.public = public
        self._advertise = advertise
        self._find_homes = find_homes
        self._nat = NatVerdict.PUBLIC if public and nat is NatVerdict.UNKNOWN else nat
        self._capabilities = capabilities
        self._device = device
        Contact((), self._nat, device, capabilities)  # ValueError now, not at the first publish
        self._peer_config = peer_config or PeerConfig(wanted=0 if public else 2)
        self._home_config = home_config
        self.emit = emit or (lambda event: None)
        self._transport: asyncio.DatagramTransport | None = None
        self._peer: PeerCore | None = None
        self._home: HomeCore | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._channels = SignalChannels(self._send_on)
        self._sends: dict[int, asyncio.Future[SendDone]] = {}
        self._contacts = ContactCache(dht)
        self._watched = WatchedPresence()
        self._publish = asyncio.Event()
        self._want_homes = asyncio.Event()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._seq = 0
        self._presence_payload = b""  # what our homes tell our watchers
        self._allow: tuple[bytes, ...] | None = None  # who may watch us (None: anyone)
        self._counts = {"sent": 0, "unreachable": 0}
        self.refused = DropCounter(logger, time.time)
        self._inbox = SignalInbox(identity, self._channels, self.refused, time.time)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def address(self) -> Address:
        """Where this node's signalling socket is bound (valid after ``start``)."""
        if self._transport is None:
            raise RuntimeError("signalling not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    @property
    def own_home(self) -> HomeEntry:
        """This node as a home (public nodes): its key, DHT and signalling addresses;
        ``advertise`` (host, port or 0) names the public address of a socket bound to
        every interface."""
        signal = self.address
        if self._advertise is not None:  # port 0: the port we are bound to
            signal = (self._advertise[0], self._advertise[1] or signal[1])
        dht_host, dht_port = self.dht.address
        if dht_host in ("0.0.0.0", "::"):
            dht_host = signal[0]
        return HomeEntry(self.identity.public_key, (dht_host, dht_port), signal)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=self.listen
        )
        self._transport = transport
        now = time.time()
        self._peer = PeerCore(
            self.identity.public_key,
            sign=self.identity.sign,
            random=os.urandom,
            now=now,
            config=self._peer_config,
        )
        if self.public:
            self._home = HomeCore(
                self.identity.public_key,
                secret=os.urandom(32),
                random=os.urandom,
                now=now,
                config=self._home_config,
            )
            self._publish.set()
        else:
            self._want_homes.set()
        self._runner = asyncio.create_task(self._run(), name=f"{self.name}-runner")
        self._arm()

    async def stop(self) -> None:
        """Detach gracefully (watchers hear it at once), then close the socket."""
        if self._peer is not None and self._transport is not None:
            self._transmit(self._peer.close(time.time()))
        if self._home is not None and self._transport is not None:
            self._transmit(self._home.close_own(time.time()))
        self._stop.set()
        if self._runner is not None:
            await self._runner
            self._runner = None
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for future in self._sends.values():
            future.cancel()

    def abort(self) -> None:
        """Close the socket without detaching (tests: a crash as the network sees it)."""
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._stop.set()

    def statistics(self) -> SignallingStatistics:
        peer = self._peer
        return SignallingStatistics(
            homes=len(peer.homes()) if peer is not None else 0,
            sent=self._counts["sent"],
            unreachable=self._counts["unreachable"],
            received=self._inbox.received,
            refused=tuple(sorted(self.refused.counts().items())),
            dropped=tuple(sorted(peer.drops.counts().items())) if peer is not None else (),
            home=self._home.statistics() if self._home is not None else None,
        )

    # -- API ---------------------------------------------------------------------

    def homes(self) -> tuple[HomeEntry, ...]:
        """Our homes now: ourselves when public, else the ones we are attached to."""
        if self.public:
            return (self.own_home,)
        return self._peer.homes() if self._peer is not None else ()

    async def send_signal(
        self, peer: bytes | str, payload: bytes, *, channel: str = ""
    ) -> SendReport:
        """Seal ``payload`` to ``peer`` (for its service ``channel``) and hand it to its
        homes; ``PeerUnreachableError`` if none delivers it, even after fetching its
        CONTACT again."""
        key = public_key_from_peer_id(peer) if isinstance(peer, str) else peer
        contact = await self._contact(key, fresh=False)
        attempts: tuple[tuple[Address, str], ...] = ()
        for round_ in range(2):
            if contact is None or not contact.homes:
                break
            done = await self._send_once(key, payload, contact, channel)
            attempts += done.attempts
            if done.delivered and done.via is not None:
                self._counts["sent"] += 1
                return SendReport(done.via, attempts)
            if round_ == 0:
                refreshed = await self._contact(key, fresh=True)
                if refreshed is None or refreshed.homes == contact.homes:
                    break
                contact = refreshed
        self._counts["unreachable"] += 1
        reason = "no CONTACT record" if contact is None else "no home delivered it"
        raise PeerUnreachableError(peer_id_for(key), attempts, reason)

    async def send(self, peer: str, payload: bytes) -> None:
        """``SignalTransport.send``: PeerLink's offers and answers."""
        await self.send_signal(peer, payload)

    async def receive(self) -> SignalDelivery:
        """The next signal for the default channel, its sender authenticated."""
        return await self._channels.open("").receive()

    def channel(self, name: str) -> SignalChannel:
        """The channel ``name`` (created on first use): a ``SignalTransport`` of its own
        for one service ("link", "chat", "call"...)."""
        return self._channels.open(name)

    def set_presence(self, status: PresenceStatus, note: str = "") -> None:
        """Tell our homes (and so our watchers) our status."""
        self._presence_payload = encode_presence(Presence(status, note, int(time.time())))
        self._push_state()
        self._publish.set()

    def allow_watchers(self, peers: Sequence[bytes] | None) -> None:
        """Only these keys may watch us (None: anyone); our homes enforce it."""
        self._allow = None if peers is None else tuple(peers)
        self._push_state()
        self._publish.set()  # the public PRESENCE record follows (_publish_contact)

    async def watch(self, peer: bytes | str) -> bool:
        """Follow ``peer``'s presence (``PresenceChanged`` events); False without CONTACT."""
        key = public_key_from_peer_id(peer) if isinstance(peer, str) else peer
        contact = await self._contact(key, fresh=True)
        if contact is None or self._peer is None:
            return False
        self._watched.follow(key)
        self._transmit(self._peer.watch(key, contact.homes, time.time()))
        return True

    def unwatch(self, peer: bytes | str) -> None:
        key = public_key_from_peer_id(peer) if isinstance(peer, str) else peer
        self._watched.forget(key)
        if self._peer is not None:
            self._peer.unwatch(key)

    def presence_of(self, peer: bytes | str) -> PresenceChanged | None:
        key = public_key_from_peer_id(peer) if isinstance(peer, str) else peer
        return self._watched.report(key)

    # -- internals: sending ------------------------------------------------------

    def _push_state(self) -> None:
        if self._peer is not None:
            self._transmit(self._peer.set_state(self._presence_payload, self._allow, time.time()))
        if self._home is not None:  # we are our own home: tell our watchers directly
            self._transmit(
                self._home.set_own_state(self._presence_payload, self._allow, time.time())
            )

    async def _send_on(self, peer: bytes | str, payload: bytes, channel: str) -> SendReport:
        return await self.send_signal(peer, payload, channel=channel)

    async def _send_once(
        self, key: bytes, payload: bytes, contact: Contact, channel: str
    ) -> SendDone:
        if self._peer is None:
            raise RuntimeError("signalling not started")
        now = time.time()
        envelope = seal_envelope(
            self.identity,
            key,
            payload,
            envelope_id=os.urandom(ENVELOPE_ID_BYTES),
            now=now,
            channel=channel,
        )
        handle, out = self._peer.send(envelope, self._contacts.order(contact.homes), now)
        future: asyncio.Future[SendDone] = asyncio.get_running_loop().create_future()
        self._sends[handle] = future
        self._transmit(out)
        self._after_input()
        try:
            done = await future
        finally:
            self._sends.pop(handle, None)
        self._contacts.failed(done.attempts)
        return done

    async def _contact(self, key: bytes, *, fresh: bool) -> Contact | None:
        if key == self.identity.public_key:
            return Contact(self.homes())
        return await self._contacts.get(key, fresh=fresh)

    # -- internals: datagrams and events ----------------------------------------

    def _datagram(self, data: bytes, source: Address) -> None:
        now = time.time()
        if self._home is not None and is_request(data):
            self._transmit(self._home.receive(data, source, now))
        elif self._peer is not None:
            self._transmit(self._peer.receive(data, source, now))
        self._after_input()

    def _transmit(self, datagrams: list[Datagram]) -> None:
        if self._transport is None:
            return
        for datagram in datagrams:
            self._transport.sendto(datagram.data, datagram.address)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.time()
        if self._home is not None:
            self._transmit(self._home.tick(now))
        if self._peer is not None:
            self._transmit(self._peer.tick(now))
        self._after_input()

    def _arm(self) -> None:
        """Schedule the next tick. While one is pending nothing is recomputed (a core's
        ``next_deadline`` walks its timers: once per tick, not once per datagram); ticks
        come at least every ``MAX_TICK`` seconds, so a timer set by a datagram fires at
        most that late."""
        if self._transport is None or self._timer is not None:
            return
        deadlines = [core.next_deadline() for core in (self._home, self._peer) if core is not None]
        delay = min(max(min(deadlines) - time.time(), 0.005), MAX_TICK) if deadlines else MAX_TICK
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _after_input(self) -> None:
        if self._home is not None:
            for home_event in self._home.drain_events():
                if isinstance(home_event, LocalDelivery):
                    self._inbox.accept(home_event.envelope)
                elif isinstance(home_event, PeerAttached):
                    self.emit(
                        PeerAttachedHere(
                            peer_id_for(home_event.key), address_text(home_event.address)
                        )
                    )
                else:
                    self.emit(PeerLeftHere(peer_id_for(home_event.key), home_event.reason))
        if self._peer is not None:
            for event in self._peer.drain_events():
                self._on_peer_event(event)
        self._arm()

    def _on_peer_event(self, event: object) -> None:
        match event:
            case Delivered():
                self._inbox.accept(event.envelope)
            case SendDone():
                future = self._sends.get(event.handle)
                if future is not None and not future.done():
                    future.set_result(event)
            case HomesChanged():
                self._publish.set()
            case NeedCandidates():
                self._want_homes.set()
            case PresenceNotice():
                report = self._watched.notice(event)
                if report is not None:
                    self.emit(report)
            case HomeAttached():
                home = event.home
                self.emit(
                    HomeUp(
                        peer_id_for(home.key),
                        address_text(home.signal),
                        address_text(event.observed),
                        event.keepalive,
                    )
                )
            case HomeLost():
                self.emit(
                    HomeDown(
                        peer_id_for(event.home.key), address_text(event.home.signal), event.reason
                    )
                )
            case _:
                pass

    # -- the runner: CONTACT publishing, home search, re-watching ----------------

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._publisher())
            if not self.public:
                group.create_task(self._home_search())
            group.create_task(self._rewatcher())
            await self._stop.wait()
            self._publish.set()
            self._want_homes.set()

    async def _publisher(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONTACT_TTL / 2):
                    await self._publish.wait()
            if self._stop.is_set():
                return
            self._publish.clear()
            await self._publish_contact()
            # Changes in a burst (a flapping home) make one put per gap, the last state.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PUBLISH_GAP):
                    await self._stop.wait()

    async def _publish_contact(self) -> None:
        homes = self.homes()
        contact = Contact(homes, self._nat, self._device, self._capabilities)
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        try:
            # Watchers restricted (allow-list): the DHT, which anyone reads, says offline.
            hidden = encode_presence(Presence(PresenceStatus.OFFLINE, "", int(time.time())))
            public = self._presence_payload if self._allow is None else hidden
            result = await publish_contact(self.dht, self.identity, contact, public, self._seq)
        except Exception as error:  # the DHT's failure is logged, the next change retries
            logger.warning("publishing our CONTACT failed: %s", error)
            return
        self.emit(ContactPublished(tuple(address_text(h.signal) for h in homes), result.stored))

    async def _home_search(self) -> None:
        assert self._find_homes is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CANDIDATE_RETRY):
                    await self._want_homes.wait()
            if self._stop.is_set() or self._peer is None:
                return
            self._want_homes.clear()
            if len(self._peer.homes()) >= self._peer_config.wanted:
                continue
            try:
                candidates = await self._find_homes()
            except Exception as error:  # a failed search is retried after CANDIDATE_RETRY
                logger.info("finding home supernodes failed: %s", error)
                continue
            self._transmit(self._peer.offer_candidates(candidates, time.time()))
            self._after_input()
            # However often the core asks (every candidate backed off), one search per gap.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SEARCH_GAP):
                    await self._stop.wait()

    async def _rewatcher(self) -> None:
        """A watched peer that is offline may come back at other homes: look again."""
        interval = self._peer_config.watch_refresh / 2
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            for key in self._watched.watched():
                report = self._watched.report(key)
                if report is not None and report.online:
                    continue
                cached = self._contacts.cached(key)
                contact = await self._contact(key, fresh=True)
                if contact is None or self._peer is None or not self._watched.following(key):
                    continue
                if cached is None or cached.homes != contact.homes:
                    self._transmit(self._peer.watch(key, contact.homes, time.time()))
                    self._after_input()

"""Reach in the running node: the signalling service and the peer app (links, contacts).

``add_peer_services`` builds them from ``[presence]`` and adds them to the
``Node`` after the DHT and the relay search (they use both), before the control
API (which answers from them). Two services, not one, because the signalling
service is the connectivity layer's own (it follows the runtime's contract
structurally) and the peer app is what the control API drives: contacts kept in
the home, presence watches of those contacts, links answered and dialled.

Why the peer app answers links itself: a link offer arrives as a sealed signal
on the "link" channel at any time; someone must answer it (``p2pnode ping`` at
the other end waits for that) and hold the link until it is idle. Answered links
are bounded (``MAX_ANSWERED_LINKS``); offers beyond are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from p2pnode.app.config import NodeConfig, hostport
from p2pnode.app.node import Node
from p2pnode.app.peer_calls import CallsNodeService
from p2pnode.app.peer_chat import add_chat_services
from p2pnode.app.peer_config import CallsSection, PresenceSection
from p2pnode.app.peer_contacts import (
    ContactRequested,
    PresenceVisibility,
    RequestBook,
    Screening,
)
from p2pnode.app.services import DhtService, RelaySearchService, directory_of
from p2pnode.connectivity.attach import HomeConfig
from p2pnode.connectivity.contact import Capability, HomeEntry, NatVerdict, PresenceStatus
from p2pnode.connectivity.homes import PeerConfig
from p2pnode.connectivity.homewire import MAX_ALLOW
from p2pnode.connectivity.ice_servers import IcePlan, ice_plan_for
from p2pnode.connectivity.link_signal import (
    SignalDecodeError,
    SignalDelivery,
    SignalKind,
    decode_signal,
)
from p2pnode.connectivity.peerlink import LinkConfig, PeerLink, PeerLinkError
from p2pnode.connectivity.resolve import FindHomes
from p2pnode.connectivity.signalling import (
    PeerUnreachableError,
    PresenceChanged,
    SignalChannel,
    SignallingService,
    contact_homes,
    relay_home_finder,
)
from p2pnode.directory.names import normalise_login
from p2pnode.directory.trust import Unverified, Verified
from p2pnode.identity import Identity, public_key_from_peer_id
from p2pnode.records import RecordKind
from p2pnode.sessions.call_config import NonContactPolicy

__all__ = [
    "CONTACTS_FILE",
    "MAX_ANSWERED_LINKS",
    "MAX_CONTACTS",
    "Contact",
    "LinkOpened",
    "PeerApp",
    "PeerAppStatistics",
    "PeerNotFoundError",
    "PingResult",
    "add_peer_services",
    "effective_config",
    "home_role",
]

logger = logging.getLogger(__name__)

CONTACTS_FILE = "contacts.json"
MAX_CONTACTS = 1000  # the watch table of a peer core holds 1024
MAX_ANSWERED_LINKS = 16  # links others opened to us, held at once
MAX_PINGS = 10  # pings per `p2pnode ping`
MAX_DIALS = 8  # links we are dialling at once (one per peer)
DIAL_QUEUE = 4  # answers held for one dial (a peer answers once per offer)
ICE_PLAN_TIMEOUT = 3.0  # seconds for the relay's credentials before going without TURN
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_NAME = 32


def _presence(config: NodeConfig) -> PresenceSection:
    section = config.presence
    assert isinstance(section, PresenceSection)
    return section


def home_role(config: NodeConfig) -> str:
    """ "serve" (a home: public, its own home) or "attach" (to two homes)."""
    presence = _presence(config)
    if presence.home != "auto":
        return presence.home
    return "serve" if config.supernode.public_ip is not None else "attach"


def effective_config(config: NodeConfig) -> NodeConfig:
    """The config the node runs with: a node attaching to homes queries the DHT as a
    client (nobody can dial it, so it must not enter routing tables). Decided at
    start because the DHT's client mode is fixed when it is built."""
    presence = _presence(config)
    if presence.enabled and home_role(config) == "attach" and not config.node.client:
        return config.override({"node": {"client": True}})
    return config


class PeerNotFoundError(LookupError):
    """A contact name, peer id or login that names nobody (the text is the reason)."""


@dataclass(frozen=True)
class Contact:
    name: str
    peer_id: str


@dataclass(frozen=True)
class PingResult:
    peer: str
    path: str  # LinkPath.describe(): "direct host->host", "relayed via ... (udp, ours)"
    direct: bool
    setup_ms: float  # first offer sent -> data channel open
    rtt_ms: tuple[float, ...]


@dataclass(frozen=True)
class LinkOpened:
    """Event: a peer link opened (we dialled or answered)."""

    peer: str
    path: str
    direct: bool
    setup_ms: float
    dialled: bool


@dataclass(frozen=True)
class PeerAppStatistics:
    contacts: int
    links_open: int
    links_answered: int
    links_dialled: int
    refused: tuple[tuple[str, int], ...]  # (reason, signals dropped)


class _DialTransport:
    """One dial's view of the "link" channel: sends go out on it, and the answers the
    peer app routes to this dial (by sender) come in; offers never reach it."""

    def __init__(self, channel: SignalChannel) -> None:
        self.channel = channel
        self.inbox: asyncio.Queue[SignalDelivery] = asyncio.Queue(DIAL_QUEUE)

    async def send(self, peer: str, payload: bytes) -> None:
        await self.channel.send(peer, payload)

    async def receive(self) -> SignalDelivery:
        return await self.inbox.get()


def _no_service(name: str) -> object:
    raise KeyError(name)


class PeerApp:
    """Contacts, their presence watches, and peer links (see the module docstring)."""

    name = "peer"

    def __init__(
        self,
        home: Path,
        identity: Identity,
        signalling: SignallingService,
        dht: DhtService,
        relays: RelaySearchService | None,
        *,
        link_idle: float,
        emit: Callable[[object], None],
        trusted: frozenset[bytes] = frozenset(),
        status: PresenceStatus = PresenceStatus.ONLINE,
        note: str = "",
    ) -> None:
        self.status = status
        self.note = note
        self.node_services: Callable[[str], object] = _no_service  # the node's, once added
        self.home = home
        self.identity = identity
        self.signalling = signalling
        self.dht = dht
        self.relays = relays
        self.link_idle = link_idle
        self.emit = emit
        self.trusted = trusted
        self._contacts: dict[str, str] = {}
        self.book = RequestBook(home)  # requests from strangers, blocks, reach settings
        self._allowed: tuple[bytes, ...] | None = None  # the watchers' allow-list sent
        self._allow_sent = False
        self._links: SignalChannel | None = None
        self._answered: set[asyncio.Task[None]] = set()
        self._dials: dict[str, _DialTransport] = {}
        self._counts = {"answered": 0, "dialled": 0}
        self._refused: Counter[str] = Counter()
        self._stop = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._contacts = self._load()
        self.book.load()
        self._allow_sent = False  # a restarted signalling service needs it again
        self.signalling.set_presence(self.status, self.note)
        self.apply_settings()
        if self._links is None:  # a channel is opened once per signalling service
            self._links = self.signalling.channel("link")

    async def run(self) -> None:
        """Watch the contacts, then answer link offers until stopped."""
        for peer_id in self._contacts.values():
            with contextlib.suppress(OSError, TimeoutError):
                await self.signalling.watch(peer_id)
        assert self._links is not None
        stopping = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                receiving = asyncio.create_task(self._links.receive())
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    break
                self._route(receiving.result())
        finally:
            stopping.cancel()

    async def stop(self) -> None:
        self._stop.set()
        for task in list(self._answered):
            task.cancel()
        if self._answered:
            await asyncio.gather(*self._answered, return_exceptions=True)

    def statistics(self) -> PeerAppStatistics:
        return PeerAppStatistics(
            len(self._contacts),
            len(self._answered),
            self._counts["answered"],
            self._counts["dialled"],
            tuple(sorted(self._refused.items())),
        )

    # -- contacts -------------------------------------------------------------------------

    def _path(self) -> Path:
        return self.home / CONTACTS_FILE

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self._path().read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            logger.warning("contacts file=%s unreadable: starting without contacts", CONTACTS_FILE)
            return {}
        if not isinstance(data, dict):
            return {}
        contacts: dict[str, str] = {}
        for name, peer_id in list(data.items())[:MAX_CONTACTS]:
            with contextlib.suppress(ValueError, TypeError):
                public_key_from_peer_id(peer_id)
                contacts[str(name)] = peer_id
        return contacts

    def _save(self) -> None:
        temporary = self._path().with_suffix(".tmp")
        temporary.write_text(json.dumps(self._contacts, indent=1, sort_keys=True))
        os.replace(temporary, self._path())

    def contacts(self) -> tuple[Contact, ...]:
        return tuple(Contact(n, p) for n, p in sorted(self._contacts.items()))

    def set_presence(self, status: PresenceStatus, note: str) -> None:
        """Our status for our watchers (kept across a restart of this service)."""
        self.status, self.note = status, note
        self.signalling.set_presence(status, note)

    def presence_of(self, peer_id: str) -> PresenceChanged | None:
        return self.signalling.presence_of(peer_id)

    async def add_contact(self, name: str, peer_id: str) -> bool:
        """Keep ``name`` for ``peer_id`` and watch its presence; whether a CONTACT was found."""
        if not name or len(name) > MAX_NAME or not set(name) <= NAME_CHARS:
            raise ValueError(f"a contact name is 1-{MAX_NAME} of a-z 0-9 . _ -")
        public_key_from_peer_id(peer_id)
        if name not in self._contacts and len(self._contacts) >= MAX_CONTACTS:
            raise ValueError(f"at most {MAX_CONTACTS} contacts")
        self._contacts[name] = peer_id
        self._save()
        self.book.take(peer_id)  # a pending request accepted; a block lifted
        self.apply_settings()
        return await self.signalling.watch(peer_id)

    def remove_contact(self, name: str) -> bool:
        peer_id = self._contacts.pop(name, None)
        if peer_id is None:
            return False
        self._save()
        if peer_id not in self._contacts.values():
            self.signalling.unwatch(peer_id)
        self.apply_settings()
        return True

    # -- requests from strangers and reach settings (peer_contacts) ------------------------

    def is_contact(self, peer_id: str) -> bool:
        return peer_id in self._contacts.values()

    def screen(
        self, peer_id: str, *, known: bool, text: str | None = None, call: bool = False
    ) -> Screening:
        """A message or call from ``peer_id``: shown, noted as a request (announced on the
        event stream), or dropped (blocked). Contacts are always known."""
        screening, request = self.book.screen(
            peer_id, time.time(), known=known or self.is_contact(peer_id), text=text, call=call
        )
        if request is not None:
            self.emit(ContactRequested(peer_id, request.messages, request.calls, request.preview))
        return screening

    def call_policy(self, configured: NonContactPolicy) -> NonContactPolicy:
        """Who may call: the person's setting, else the config's ``[calls] non_contacts``."""
        return self.book.settings.who_may_call or configured

    def auto_answer(self, configured: bool) -> bool:
        """Answer calls unattended: the person's setting, else ``[calls] auto_answer``."""
        chosen = self.book.settings.auto_answer
        return configured if chosen is None else chosen

    def apply_settings(self) -> None:
        """Presence visibility to the homes (an allow-list of at most ``MAX_ALLOW`` keys:
        beyond, the other contacts see us offline); who may call and auto-answer to the
        running call service (a new one reads them at its start)."""
        visibility = self.book.settings.presence_visibility
        allow: tuple[bytes, ...] | None = None
        if visibility is PresenceVisibility.NOBODY:
            allow = ()
        elif visibility is PresenceVisibility.CONTACTS:
            keys = sorted({public_key_from_peer_id(p) for p in self._contacts.values()})
            if len(keys) > MAX_ALLOW:
                logger.warning("presence visible to %d of %d contacts only", MAX_ALLOW, len(keys))
            allow = tuple(keys[:MAX_ALLOW])
        if allow != self._allowed or not self._allow_sent:  # each change republishes: only then
            self.signalling.allow_watchers(allow)
            self._allowed, self._allow_sent = allow, True
        with contextlib.suppress(KeyError):
            calls = self.node_services(CallsNodeService.name)
            if isinstance(calls, CallsNodeService) and calls.calls is not None:
                service = calls.calls
                policy = self.call_policy(NonContactPolicy(calls.section.non_contacts))
                auto = self.auto_answer(calls.section.auto_answer)
                service.config = replace(service.config, non_contacts=policy, auto_answer=auto)

    async def resolve(self, text: str) -> str:
        """A peer id from a contact name, a peer id, or a login (directory: one verified
        claim, or exactly one unverified claim)."""
        if text in self._contacts:
            return self._contacts[text]
        with contextlib.suppress(ValueError):
            public_key_from_peer_id(text)
            return text
        try:
            login = normalise_login(text)
        except ValueError:
            raise PeerNotFoundError(f"{text!r} is no contact, peer id or login") from None
        directory = directory_of(self.dht, self.trusted)
        resolution = await directory.resolve(RecordKind.NAME_CLAIM, login)
        if isinstance(resolution, (Verified, Unverified)):
            return resolution.candidate.peer_id
        raise PeerNotFoundError(f"no single owner of the login {login!r}")

    # -- links ----------------------------------------------------------------------------

    async def link_config(self) -> LinkConfig:
        """ICE through our best relay (credentials from its RPC), else host/srflx only."""
        chosen = self.relays.finder.chosen() if self.relays is not None else ()
        for relay in chosen:
            try:
                async with asyncio.timeout(ICE_PLAN_TIMEOUT):
                    return LinkConfig(ice=await ice_plan_for(self.dht.node, relay))
            except (OSError, TimeoutError, ValueError) as error:
                logger.info("relay for links unusable: %s", type(error).__name__)
        return LinkConfig(ice=IcePlan())

    async def ping(self, peer_id: str, count: int = 3) -> PingResult:
        """Open a link to ``peer_id``, measure ``count`` round trips, close it."""
        assert self._links is not None
        count = max(1, min(count, MAX_PINGS))
        if peer_id in self._dials or len(self._dials) >= MAX_DIALS:
            raise PeerLinkError("a link to this peer (or too many) is being set up")
        transport = self._dials[peer_id] = _DialTransport(self._links)
        try:
            link = await PeerLink.dial(peer_id, transport, await self.link_config())
        except PeerUnreachableError:
            raise PeerNotFoundError("the peer is not attached to any home") from None
        finally:
            del self._dials[peer_id]
        self._counts["dialled"] += 1
        try:
            path = link.path()
            self.emit(
                LinkOpened(peer_id, path.describe(), path.direct, link.timings.setup_ms, True)
            )
            rtts = [await link.ping() * 1000.0 for _ in range(count)]
        finally:
            await link.close()
        return PingResult(peer_id, path.describe(), path.direct, link.timings.setup_ms, tuple(rtts))

    def _route(self, delivery: SignalDelivery) -> None:
        """Offers are answered; answers go to the dial waiting for that peer."""
        try:
            kind = decode_signal(delivery.payload).kind
        except SignalDecodeError:
            self._refused["bad-signal"] += 1
            return
        if kind is SignalKind.OFFER:
            self._offered(delivery)
            return
        dial = self._dials.get(delivery.sender)
        if dial is None or dial.inbox.full():
            self._refused["unexpected-answer"] += 1
            return
        dial.inbox.put_nowait(delivery)

    def _offered(self, delivery: SignalDelivery) -> None:
        if len(self._answered) >= MAX_ANSWERED_LINKS:
            self._refused["too-many-links"] += 1
            return
        task = asyncio.create_task(self._answer(delivery), name="peer-link-answer")
        self._answered.add(task)
        task.add_done_callback(self._answered.discard)

    async def _answer(self, delivery: SignalDelivery) -> None:
        assert self._links is not None
        try:
            link = await PeerLink.answer(delivery, self._links, await self.link_config())
        except SignalDecodeError:
            self._refused["not-an-offer"] += 1
            return
        except (PeerLinkError, PeerUnreachableError, OSError):
            self._refused["setup-failed"] += 1
            return
        self._counts["answered"] += 1
        try:
            path = link.path()
            self.emit(
                LinkOpened(
                    delivery.sender, path.describe(), path.direct, link.timings.setup_ms, False
                )
            )
            await self._hold(link)
        finally:
            await link.close()

    async def _hold(self, link: PeerLink) -> None:
        """Until the peer closes the link or it is idle for ``link_idle`` seconds."""
        closed = asyncio.Event()

        def changed() -> None:
            if link.pc.connectionState in ("closed", "failed"):
                closed.set()

        link.pc.on("connectionstatechange", changed)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.link_idle):
                await closed.wait()


def add_peer_services(
    home: Path,
    config: NodeConfig,
    identity: Identity,
    node: Node,
    dht: DhtService,
    relays: RelaySearchService | None,
) -> PeerApp | None:
    """Add the signalling service and the peer app to ``node`` (``[presence]`` enabled)."""
    presence = _presence(config)
    if not presence.enabled:
        add_chat_services(home, config, identity, dht, None, node.add, node.emit)
        return None
    serve = home_role(config) == "serve"
    peer_config = PeerConfig(wanted=0 if serve else 2)
    if presence.keepalive is not None:
        peer_config = PeerConfig(wanted=peer_config.wanted, keepalive=presence.keepalive)
    home_config = HomeConfig(max_attached=presence.max_attached, control_rate=presence.control_rate)
    listen = hostport(presence.listen)
    if serve:
        advertise = (presence.advertise, 0) if presence.advertise is not None else None
        signalling = SignallingService(
            identity,
            dht.node,
            listen=listen,
            advertise=advertise,
            public=True,
            capabilities=Capability.CHAT | Capability.AUDIO,
            peer_config=peer_config,
            home_config=home_config,
            emit=node.emit,
        )
    else:
        keys = [public_key_from_peer_id(p) for p in presence.homes]
        find: FindHomes
        if keys:

            async def fixed_homes() -> list[HomeEntry]:
                return await contact_homes(dht.node, keys)

            find = fixed_homes
        elif relays is not None:
            find = relay_home_finder(dht.node, relays.finder)
        else:
            raise ValueError("presence: attaching needs presence.homes or supernode.relay_search")
        signalling = SignallingService(
            identity,
            dht.node,
            listen=listen,
            find_homes=find,
            nat=NatVerdict.UNKNOWN,
            capabilities=Capability.CHAT | Capability.AUDIO,
            peer_config=peer_config,
            home_config=home_config,
            emit=node.emit,
        )
    node.add(signalling, required=True)
    app = PeerApp(
        home,
        identity,
        signalling,
        dht,
        relays,
        link_idle=presence.link_idle,
        emit=node.emit,
        trusted=frozenset(public_key_from_peer_id(p) for p in config.enum.trust),
        status=PresenceStatus[presence.status.upper()],
        note=presence.note,
    )
    node.add(app)
    app.node_services = node.service  # the control API reaches the chat service through us
    chat = add_chat_services(home, config, identity, dht, signalling, node.add, node.emit)
    if chat is not None:  # strangers' messages become requests; blocked peers are dropped
        chat.screen, chat.blocked = app.screen, app.book.is_blocked
        chat.is_contact = app.is_contact  # read receipts only to accepted peers
        chat.relays = relays.finder if relays is not None else None  # mailbox candidates
    calls = config.calls
    assert isinstance(calls, CallsSection)
    if calls.enabled:
        node.add(CallsNodeService(home, signalling, app, calls, emit=node.emit))
    return app

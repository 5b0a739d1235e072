"""The SIP gateway as a service of ``p2pnode run`` (``[sip] enabled = true``).

Why a wrapper and not the gateway itself in the node: the gateway lives in a
lower layer (gateways) and knows neither the home nor the runtime. This
service opens the accounts where ``p2pnode sip account add`` and the desktop
app write them (``<home>/sip-accounts.sqlite``), takes the domain from
``[sip]`` or from that file, gives the gateway the node's DHT as its
directory (a registered account's login is claimed with the identity the
gateway hosts for it, and that identity's presence is published while a
device is registered: ``sip_presence``), and answers the control API's status with a snapshot
of the registrations. A fresh gateway is built at every start, so the node's
restart after a failure begins from a clean state (registrations are
renewed by the phones within their Expires).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from p2pnode.app.services import DhtService, directory_of
from p2pnode.app.sip_config import SipSection, to_gateway
from p2pnode.app.sip_presence import SipPresence, dht_publisher
from p2pnode.gateways.sip.accounts import AccountError, AccountStore
from p2pnode.gateways.sip.gateway import NumberDirectory, SipGateway
from p2pnode.gateways.sip.hosted import LoginClaimer
from p2pnode.gateways.sip.settings import GatewayStatistics

if TYPE_CHECKING:
    from p2pnode.dht import DhtNode

__all__ = [
    "ACCOUNTS_FILE",
    "MAX_LISTED",
    "Registration",
    "SipService",
    "SipServiceStatistics",
    "SipStatus",
]

ACCOUNTS_FILE = "sip-accounts.sqlite"  # the same file as ``p2pnode sip account``
MAX_LISTED = 1000  # registrations one status lists (the count is always complete)


@dataclass(frozen=True)
class Registration:
    """One registered device of an account."""

    login: str
    contact: str
    source: str  # HOST:PORT the REGISTER came from (the path back through a NAT)
    transport: str  # "udp" or "stream"
    expires_in: int
    user_agent: str = ""  # the device's User-Agent header (printable, bounded)


@dataclass(frozen=True)
class SipServiceStatistics:
    domain: str
    address: str  # HOST:PORT of UDP and TCP, "" before start
    tls_address: str
    accounts: int
    gateway: GatewayStatistics | None


@dataclass(frozen=True)
class SipStatus:
    """What ``p2pnode sip status`` shows of a running node."""

    statistics: SipServiceStatistics
    registrations: tuple[Registration, ...]
    truncated: bool


def _text(address: tuple[str, int] | None) -> str:
    if address is None:
        return ""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SipService:
    """Hosts ``SipGateway`` with the home's accounts and the node's DHT."""

    name = "sip"

    def __init__(
        self,
        home: Path,
        section: SipSection,
        *,
        directory: Callable[[], LoginClaimer] | None = None,
        p2p_login: str | None = None,
        numbers: Callable[[], NumberDirectory] | None = None,
        presence: Callable[[], DhtNode] | None = None,
    ) -> None:
        """``p2p_login``: the bridge's account (what the gateway does not host goes there);
        ``presence``: the DHT the hosted identities' PRESENCE records go to."""
        self.home = home
        self.section = section
        self._directory = directory
        self._numbers = numbers  # our trusted ENUM, asked first for outbound numbers
        self.p2p_login = p2p_login
        self._presence_dht = presence
        self.presence: SipPresence | None = None  # while a gateway runs (the bridge attaches)
        self.stopped = asyncio.Event()  # set when this start's gateway stops (the bridge follows)
        self.started = asyncio.Event()  # set while a gateway runs (the bridge waits for it)
        self.store: AccountStore | None = None
        self.gateway: SipGateway | None = None
        self.domain = section.domain or ""

    @staticmethod
    def for_node(
        home: Path,
        section: SipSection,
        dht: DhtService,
        *,
        bridge: bool = False,
        trusted: frozenset[bytes] = frozenset(),
    ) -> SipService:
        """The service claiming logins through ``dht`` (unless ``claim_logins`` is off);
        with ``bridge``, routing what it does not host to ``section.bridge_account``; with
        ``trusted`` verifiers ([enum] trust), outbound numbers ask our ENUM first."""
        p2p_login = section.bridge_account if bridge else None
        numbers = (lambda: directory_of(dht, trusted)) if trusted else None
        if not section.claim_logins:
            return SipService(home, section, p2p_login=p2p_login, numbers=numbers)
        return SipService(
            home,
            section,
            directory=lambda: directory_of(dht, frozenset()),
            p2p_login=p2p_login,
            numbers=numbers,
            presence=lambda: dht.node,
        )

    async def start(self) -> None:
        try:
            store = AccountStore.open(self.home / ACCOUNTS_FILE, self.section.domain)
        except AccountError as error:  # no domain anywhere, or another domain's accounts
            raise RuntimeError(f"[sip]: {error}; set sip.domain to the accounts' domain") from None
        gateway = SipGateway(
            to_gateway(self.section, store.realm),
            store,
            directory=None if self._directory is None else self._directory(),
            p2p_login=self.p2p_login,
            numbers=None if self._numbers is None else self._numbers(),
        )
        try:
            await gateway.start()
        except BaseException:
            await gateway.stop()
            store.close()
            raise
        self.store, self.gateway, self.domain = store, gateway, store.realm
        if self._presence_dht is not None:
            self.presence = SipPresence(gateway, dht_publisher(self._presence_dht(), store))
            self.presence.start()
        self.stopped = asyncio.Event()
        self.started.set()

    async def stop(self) -> None:
        gateway, store, presence = self.gateway, self.store, self.presence
        self.gateway = self.store = self.presence = None
        if presence is not None:
            await presence.stop()
        self.stopped.set()
        self.started.clear()
        if gateway is not None:
            await gateway.stop()
        if store is not None:
            store.close()

    def statistics(self) -> SipServiceStatistics:
        gateway, store = self.gateway, self.store
        return SipServiceStatistics(
            domain=self.domain,
            address=_text(None if gateway is None else gateway.address),
            tls_address=_text(None if gateway is None else gateway.tls_address),
            accounts=0 if store is None else store.count(),
            gateway=None if gateway is None else gateway.statistics(),
        )

    def status(self, now: float) -> SipStatus:
        """The statistics and every live registration (at most ``MAX_LISTED``), by login."""
        gateway, store = self.gateway, self.store
        rows: list[Registration] = []
        truncated = False
        if gateway is not None and store is not None:
            for login in store.logins():
                for binding in gateway.registrar.bindings(login, now):
                    if len(rows) == MAX_LISTED:
                        truncated = True
                        break
                    rows.append(
                        Registration(
                            login=login,
                            contact=str(binding.contact),
                            source=_text(binding.source),
                            transport="stream" if binding.reliable else "udp",
                            expires_in=binding.remaining(now),
                            user_agent=binding.user_agent,
                        )
                    )
        return SipStatus(self.statistics(), tuple(rows), truncated)

"""Which P2P peer a login, peer id or number dialled at the gateway stands for, and who may.

Who: :class:`BridgeCallers` splits the callers among bridges sharing the
gateway's bridge account; :class:`ForeignCallGate` admits other SIP networks'
calls under the operator's :class:`ForeignCallPolicy` (off, allow-list, rate).

The gateway rings the bridge for what it does not host (see :mod:`routing`);
the To of that INVITE names what the caller dialled. This module turns that
name into the peer the bridge calls, trusting only what the gateway operator
trusts:

1. A peer id names its key by itself: nothing to look up.
2. A number: a DID the operator mapped to a login here (``dids``), else the
   number's ENUM record in the DHT, used only when a trusted verifier vouches
   for it (``Route.source == "verified"``; a toll-free fallback or an
   unverified claim is never followed). Its first directive whose URI points
   into the P2P network - ``sip:<login or peer id>@<gateway domain>`` - gives
   the login (or peer id) to resolve; a URI elsewhere is a phone number the
   bridge does not carry.
3. A login: its ``NAME_CLAIM`` through the directory. A verified claim is
   used; a single unverified one only when the operator allows it
   (``allow_unverified``), since anyone can claim a free name.

At most one indirection (number -> login), so a record cannot send the
bridge round a loop. A directory that does not answer in time raises
``DirectoryTimeoutError`` (a ``TimeoutError``): the bridge answers the phone
480, never a silent 404.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from p2pnode.directory.names import LoginError, normalise_login
from p2pnode.directory.trust import Resolution, Route, Unverified, Verified
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import SipUri, Uri, parse_uri
from p2pnode.gateways.sip.trunks import digits
from p2pnode.identity import public_key_from_peer_id
from p2pnode.records import RecordKind

__all__ = [
    "NOT_THIS_BRIDGE",
    "BridgeCallers",
    "ForeignCallGate",
    "ForeignCallPolicy",
    "LookupDirectory",
    "PeerResolver",
    "PeerTarget",
    "PeerVia",
    "takes_caller",
]

# What a bridge answers a call it does not place: the gateway forks a call for
# the bridge account to every registered bridge, and RFC 3261 §16.7 ranks 5xx
# last, so the one bridge that takes the call decides the caller's answer.
NOT_THIS_BRIDGE = (503, "Service Unavailable")


@dataclass(frozen=True, slots=True)
class ForeignCallPolicy:
    """Whether callers from other SIP domains may reach bridged P2P logins, and how often.

    The From domain of a foreign caller is unverified (the gateway only
    authenticates From in its own domain), so the allow-list is a filter, not
    a proof; the rate limit is what bounds the cost an outside network can
    put on the P2P side (each admitted call is a P2P dial).
    """

    enabled: bool = True
    allow_domains: frozenset[str] = frozenset()  # empty: any domain
    per_minute: float = 30.0  # foreign calls admitted per minute (burst: as many)


class ForeignCallGate:
    """Sans-IO admission of foreign calls: a token bucket refilled at ``per_minute``."""

    def __init__(self, policy: ForeignCallPolicy, local_domain: str) -> None:
        self.policy = policy
        self.local_domain = local_domain.lower()
        self._tokens = policy.per_minute
        self._last: float | None = None
        self.refusals: Counter[str] = Counter()  # by reason: foreign-off/-domain/-rate
        self.admitted = 0  # foreign calls let through

    def admit(self, caller_domain: str, now: float) -> tuple[int, str] | None:
        """None to admit, else the SIP refusal (403 off / not allowed, 503 over the rate)."""
        domain = caller_domain.lower()
        if domain == self.local_domain:
            return None  # our own (authenticated) accounts are not foreign
        if not self.policy.enabled:
            self.refusals["foreign-off"] += 1
            return 403, "Forbidden"
        if self.policy.allow_domains and domain not in self.policy.allow_domains:
            self.refusals["foreign-domain"] += 1
            return 403, "Forbidden"
        if self._last is not None:
            refill = (now - self._last) * self.policy.per_minute / 60
            self._tokens = min(self.policy.per_minute, self._tokens + refill)
        self._last = now
        if self._tokens < 1:
            self.refusals["foreign-rate"] += 1
            return 503, "Service Unavailable"
        self._tokens -= 1
        self.admitted += 1
        return None


class BridgeCallers(enum.Enum):
    """Whose phone calls one bridge places; it dials as its own P2P identity.

    Several bridges can register as the gateway's bridge account: one per
    hosted identity (``HOSTED``: only that login's own phones, so the peer
    sees the user's identity) and one with the gateway's identity for other
    SIP networks (``FOREIGN``), so a foreign caller never speaks as a user.
    ``OTHERS`` is ``FOREIGN`` plus the local accounts that have no bridge of
    their own (``own_bridges``): they dial as the gateway's identity too, and
    the callee is told who called, verified (the gateway authenticated them).
    """

    ANY = "any"
    HOSTED = "hosted"
    FOREIGN = "foreign"
    OTHERS = "others"


def takes_caller(
    callers: BridgeCallers,
    caller: Uri,
    domain: str,
    hosted_login: str,
    own_bridges: frozenset[str] = frozenset(),
) -> bool:
    """Whether a bridge serving ``callers`` places a call from ``caller`` (the From URI).

    The gateway authenticated a From in its own domain, so ``HOSTED`` is a proof;
    a foreign From is whatever the other network said. ``own_bridges``: the
    local logins whose ``HOSTED`` bridge places their calls (``OTHERS`` leaves
    them to it).
    """
    if callers is BridgeCallers.ANY:
        return True
    local = isinstance(caller, SipUri) and caller.host.lower() == domain.lower()
    if callers is BridgeCallers.FOREIGN:
        return not local
    if callers is BridgeCallers.OTHERS:
        return not local or (isinstance(caller, SipUri) and caller.user not in own_bridges)
    return local and isinstance(caller, SipUri) and caller.user == hosted_login


class LookupDirectory(Protocol):
    """What the resolver needs of :class:`p2pnode.directory.lookup.Directory`."""

    async def resolve(self, kind: RecordKind, subject: str) -> Resolution: ...

    async def route(self, number: str) -> Route | None: ...


class PeerVia(enum.Enum):
    PEER_ID = "peer-id"
    LOGIN = "login"  # a verified name claim
    LOGIN_UNVERIFIED = "login-unverified"  # the only claim, no trusted verifier vouches
    DID = "did"  # a DID configured on the gateway, then its login
    ENUM = "enum"  # a verified ENUM record, then its login


@dataclass(frozen=True, slots=True)
class PeerTarget:
    peer_id: str
    via: PeerVia
    login: str | None = None  # the login it resolved through, if any


class PeerResolver:
    """Resolve what a phone dialled to a P2P peer (see the module doc for the rules)."""

    def __init__(
        self,
        directory: LookupDirectory,
        *,
        gateway_domain: str,
        dids: Mapping[str, str] | None = None,
        allow_unverified: bool = False,
    ) -> None:
        """``dids``: ``+<digits>`` -> P2P login, configured by the operator."""
        self.directory = directory
        self.gateway_domain = gateway_domain.lower()
        self.dids = {f"+{digits(k)}": v for k, v in (dids or {}).items() if digits(k)}
        self.allow_unverified = allow_unverified

    async def resolve(self, dialled: str) -> PeerTarget | None:
        peer = _peer_id(dialled)
        if peer is not None:
            return PeerTarget(peer, PeerVia.PEER_ID)
        number = digits(dialled) if not dialled[:1].isalpha() else None
        if number is not None:
            return await self._number(f"+{number}")
        return await self._login(dialled)

    async def peer_id(self, dialled: str) -> str | None:
        """The shape :class:`~p2pnode.gateways.sip.bridge.SipP2pBridge` takes as ``resolve``."""
        target = await self.resolve(dialled)
        return None if target is None else target.peer_id

    async def _number(self, number: str) -> PeerTarget | None:
        login = self.dids.get(number)
        if login is not None:
            found = await self._login(login)
            return None if found is None else PeerTarget(found.peer_id, PeerVia.DID, found.login)
        route = await self.directory.route(number)
        if route is None or route.source != "verified":
            return None
        for directive in route.directives:
            user = self._p2p_user(directive.uri_for(number))
            if user is None:
                continue
            peer = _peer_id(user)
            if peer is not None:
                return PeerTarget(peer, PeerVia.ENUM)
            found = await self._login(user)
            return None if found is None else PeerTarget(found.peer_id, PeerVia.ENUM, found.login)
        return None

    def _p2p_user(self, uri_text: str | None) -> str | None:
        """The user of ``sip:user@<gateway domain>``; None for a URI outside the P2P network."""
        if uri_text is None:
            return None
        try:
            uri = parse_uri(uri_text)
        except SipDecodeError:
            return None
        if not isinstance(uri, SipUri) or uri.user is None:
            return None
        return uri.user if uri.host.lower() == self.gateway_domain else None

    async def _login(self, text: str) -> PeerTarget | None:
        try:
            login = normalise_login(text)
        except LoginError:
            return None
        resolution = await self.directory.resolve(RecordKind.NAME_CLAIM, login)
        if isinstance(resolution, Verified):
            return PeerTarget(resolution.candidate.peer_id, PeerVia.LOGIN, login)
        if isinstance(resolution, Unverified) and self.allow_unverified:
            return PeerTarget(resolution.candidate.peer_id, PeerVia.LOGIN_UNVERIFIED, login)
        return None


def _peer_id(text: str) -> str | None:
    try:
        public_key_from_peer_id(text)
    except ValueError:
        return None
    return text.strip().lower()

"""Who may allocate: long-term credentials, TURN REST API credentials, stateless nonces.

Injected policy (STYLE 11): the server core only calls a ``CredentialLookup``
``(username, realm) -> Credential | None``; the operator's static users, the
TURN REST API secret (coturn ``--use-auth-secret``, what WebRTC deployments
hand out) and, later, the p2pnode layer's DHT-identity policy are all such
callables, chained with ``first_match``.

Nonces are stateless: ``hex(expiry) . HMAC(secret, expiry | client address)``,
so a flood of unauthenticated requests costs no memory, a nonce only works for
the client it was issued to, and an expired one gives 438 Stale Nonce.

Clocks: nonces run on the core's ``now`` (monotonic). Only REST credentials need
wall time (their expiry is unix seconds chosen by whoever issued them): the
lookup records it in ``Credential.expires`` and the core compares it with the
wall time its adapter passes in, so nothing here reads a clock.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "Credential",
    "CredentialLookup",
    "NonceIssuer",
    "NonceVerdict",
    "first_match",
    "long_term_key",
    "rest_api_credentials",
    "rest_api_password",
    "rest_api_username",
    "static_users",
]

Address = tuple[str, int]

NONCE_MAC_BYTES = 12
DEFAULT_NONCE_LIFETIME = 600.0


@dataclass(frozen=True)
class Credential:
    """The long-term key to check MESSAGE-INTEGRITY with, and who is paying (quota identity)."""

    key: bytes
    identity: str
    # Wall-clock unix seconds after which the credential is refused (None: never).
    expires: float | None = None


CredentialLookup = Callable[[str, str], Credential | None]


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 8489 §9.2.2: key = MD5(username ":" OpaqueString(realm) ":" OpaqueString(password))."""
    text = f"{username}:{realm}:{password}".encode()
    return hashlib.md5(text, usedforsecurity=False).digest()


def static_users(users: Mapping[str, str]) -> CredentialLookup:
    """Operator-configured ``name -> password`` (coturn ``--user``); identity = name."""
    table = dict(users)

    def lookup(username: str, realm: str) -> Credential | None:
        password = table.get(username)
        if password is None:
            return None
        return Credential(long_term_key(username, realm, password), username)

    return lookup


def rest_api_username(expiry: int, peer_id: str, separator: str = ":") -> str:
    """TURN REST API username: ``"<unix expiry>:<peer id>"``."""
    return f"{expiry}{separator}{peer_id}"


def rest_api_password(secret: bytes, username: str) -> str:
    """TURN REST API password: ``base64(HMAC-SHA1(secret, username))`` exactly as coturn's
    ``--use-auth-secret`` computes it (so aioice, browsers and turnutils_uclient -W work)."""
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def rest_api_credentials(
    secret: bytes,
    *,
    clock: Callable[[], float] | None = None,
    separator: str = ":",
) -> CredentialLookup:
    """Time-limited credentials: valid while the username's expiry (unix seconds) is ahead of
    wall time. Identity for quotas is the peer id after the separator, so renewing credentials
    does not reset the per-identity cap.

    Without ``clock`` (inside a ``TurnServer``) the expiry goes into ``Credential.expires``
    and the core checks it against the wall time its adapter passes; a ``clock`` (for a
    lookup used on its own, e.g. by a credential issuer's tests) is checked here instead."""

    def lookup(username: str, realm: str) -> Credential | None:
        expiry_text, sep, peer_id = username.partition(separator)
        if not expiry_text.isdigit() or len(expiry_text) > 12:
            return None
        expiry = int(expiry_text)
        if clock is not None and expiry < clock():
            return None
        password = rest_api_password(secret, username)
        key = long_term_key(username, realm, password)
        identity = peer_id if sep else username
        return Credential(key, identity, None if clock is not None else float(expiry))

    return lookup


def first_match(*lookups: CredentialLookup) -> CredentialLookup:
    """The first lookup that knows the username wins."""

    def lookup(username: str, realm: str) -> Credential | None:
        for candidate in lookups:
            found = candidate(username, realm)
            if found is not None:
                return found
        return None

    return lookup


class NonceVerdict(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # ours, expired: 438
    FORGED = "forged"  # not ours or not for this client: 438 as well (RFC 8489 §9.2.4)


class NonceIssuer:
    """Stateless nonces bound to the client's transport address and an expiry."""

    __slots__ = ("_lifetime", "_secret")

    def __init__(self, secret: bytes, lifetime: float = DEFAULT_NONCE_LIFETIME) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        self._secret = secret
        self._lifetime = lifetime

    def _mac(self, expiry_text: str, client: Address) -> str:
        message = f"{expiry_text}|{client[0]}|{client[1]}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[: 2 * NONCE_MAC_BYTES]

    def issue(self, client: Address, now: float) -> str:
        """A nonce valid for ``lifetime`` seconds from ``now`` for ``client`` only."""
        expiry_text = f"{int((now + self._lifetime) * 1000):x}"
        return expiry_text + "-" + self._mac(expiry_text, client)

    def verify(self, nonce: str, client: Address, now: float) -> NonceVerdict:
        expiry_text, sep, mac = nonce.partition("-")
        if not sep or len(expiry_text) > 16:
            return NonceVerdict.FORGED
        try:
            expiry = int(expiry_text, 16) / 1000
        except ValueError:
            return NonceVerdict.FORGED
        if not hmac.compare_digest(mac, self._mac(expiry_text, client)):
            return NonceVerdict.FORGED
        return NonceVerdict.VALID if now < expiry else NonceVerdict.STALE

"""TURN credentials for proven peers, handed out by a supernode over a DHT extension RPC.

A supernode runs its TURN server with a secret (coturn ``--use-auth-secret``,
``relay.auth.rest_api_credentials``). A peer that proves its identity (signs
the request with its Ed25519 key: the key the DHT frame names as sender) gets
time-limited credentials in the TURN REST API style:

    username = "<unix expiry>:<peer id>"
    password = base64(HMAC-SHA1(secret, username))

so the relay's per-identity quota counts the peer's key, not an address, and
the credentials also work in any TURN client (aioice, browsers, coturn tools).

Wire form (DHT extension ``CREDENTIALS_CODE``; msgpack fields inside the DHT frame)::

    request: [version=1, reply_key(bin 32: X25519, ephemeral), ttl, timestamp,
              signature(bin 64)]
    reply:   [status, detail(str), username(str), sealed_password(bin), expires_at, realm(str)]

The signature (by the requester's identity key) covers a context string, the
SUPERNODE's key, the reply key, the ttl and the timestamp: it cannot be
replayed to another supernode, and a replay to the same one is useless because
the password is sealed (libsodium sealed box) to the requester's one-time
X25519 reply key. DHT datagrams are not encrypted: a password sniffed off the
wire would let anyone spend that peer's relay quota.

Invariants:
- The issuer holds no per-request state: a credential is a pure function of
  the secret, the peer and the expiry; request floods cost CPU, bounded by the
  DHT's per-source rate limit.
- Only a request signed by the DHT sender's key, for this supernode, within
  ``MAX_REQUEST_SKEW`` of our clock, gets credentials; anything else gets
  ``UNPROVEN``. The proof does not depend on the DHT's routing-table challenges
  (client-mode peers never get those).
- Decoders are total: any fields give a value or ``CredentialsDecodeError``,
  whose message never quotes a field (``records.fields``).
- A node that is not relaying (a client, ``--no-relay``, demoted) serves no
  credentials: it answers UNAVAILABLE, final for the requester, without
  checking a signature, in a reply smaller than the request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import nacl.exceptions
import nacl.public

from p2pnode.dht import Address, DhtNode, Peer
from p2pnode.identity import SIGNATURE_BYTES, Identity, peer_id_for, verify_signature
from p2pnode.records.fields import FieldReader
from relay.auth import rest_api_password, rest_api_username

__all__ = [
    "CREDENTIALS_CODE",
    "DEFAULT_CREDENTIAL_TTL",
    "MAX_CREDENTIAL_TTL",
    "CredentialIssuer",
    "CredentialStatus",
    "CredentialsDecodeError",
    "CredentialsError",
    "CredentialsReply",
    "CredentialsRequest",
    "TurnCredentials",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "open_reply",
    "request_credentials",
    "signed_request",
]

logger = logging.getLogger(__name__)

CREDENTIALS_CODE = 72  # in the DHT's EXTENSION_CODES (64..127)
WIRE_VERSION = 1
X25519_KEY_BYTES = 32
MIN_CREDENTIAL_TTL = 60
# A call holds its allocation for hours and every Refresh re-checks the username's
# expiry, so credentials must outlive a long call (coturn's REST default is a day).
DEFAULT_CREDENTIAL_TTL = 12 * 3600
MAX_CREDENTIAL_TTL = 24 * 3600
MAX_TEXT = 200
MAX_UNAVAILABLE_DETAIL = 48  # keeps a refusal smaller than any request (no amplification)
MAX_SEALED_BYTES = 128  # 28-byte password + 48 bytes of sealed-box overhead, with room
MAX_REQUEST_SKEW = 300  # seconds between the requester's timestamp and our clock
MAX_TIMESTAMP = 2**40
SIGNING_CONTEXT = b"p2pnode-turn-credentials-v1\x00"


class CredentialsDecodeError(ValueError):
    """Extension fields that are not a well-formed credentials request or reply."""


class CredentialsError(Exception):
    """The supernode did not give us credentials; ``str()`` says why."""


class CredentialStatus(enum.IntEnum):
    ISSUED = 0
    UNPROVEN = 1  # the request's signature or timestamp does not check out
    UNAVAILABLE = 2  # not (or no longer) a relay: do not retry this one


@dataclass(frozen=True, slots=True)
class CredentialsRequest:
    reply_key: bytes  # the requester's ephemeral X25519 public key
    ttl: int
    timestamp: int  # unix seconds, the requester's clock
    signature: bytes  # by the requester's identity key over ``signed_bytes``

    def signed_bytes(self, supernode_key: bytes) -> bytes:
        return _signed_bytes(supernode_key, self.reply_key, self.ttl, self.timestamp)


def _signed_bytes(supernode_key: bytes, reply_key: bytes, ttl: int, timestamp: int) -> bytes:
    return (
        SIGNING_CONTEXT
        + supernode_key
        + reply_key
        + ttl.to_bytes(8, "big")
        + timestamp.to_bytes(8, "big")
    )


def signed_request(
    identity: Identity, supernode_key: bytes, reply_key: bytes, ttl: int, now: float
) -> CredentialsRequest:
    """A request from ``identity`` to the supernode whose identity key is ``supernode_key``."""
    timestamp = int(now)
    signature = identity.sign(_signed_bytes(supernode_key, reply_key, ttl, timestamp))
    return CredentialsRequest(reply_key, ttl, timestamp, signature)


@dataclass(frozen=True, slots=True)
class CredentialsReply:
    status: CredentialStatus
    detail: str
    username: str
    sealed_password: bytes
    expires_at: int
    realm: str


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """What a TURN client needs (long-term credential mechanism, RFC 8489 §9.2)."""

    username: str
    password: str
    realm: str
    expires_at: int

    @property
    def peer_id(self) -> str:
        """The identity the relay counts allocations against."""
        return self.username.partition(":")[2]


_READ = FieldReader(CredentialsDecodeError)


def _text(value: object, name: str) -> str:
    text = _READ.text(value, name)
    if len(text) > MAX_TEXT:
        raise CredentialsDecodeError(f"{name} is longer than {MAX_TEXT} characters")
    return text


def encode_request(request: CredentialsRequest) -> tuple[object, ...]:
    return (WIRE_VERSION, request.reply_key, request.ttl, request.timestamp, request.signature)


def decode_request(fields: tuple[object, ...]) -> CredentialsRequest:
    """Total: a request or ``CredentialsDecodeError`` (a ``ValueError``, as the DHT wants).

    The fields come decoded from the DHT frame; whatever their shape (a field
    nested a thousand deep, say), only type and range checks run on them and no
    error quotes them.
    """
    if len(fields) != 5:
        raise CredentialsDecodeError("a credentials request has 5 fields")
    version, reply_key, ttl, timestamp, signature = fields
    _READ.exact(version, "credentials version", WIRE_VERSION)
    return CredentialsRequest(
        _READ.binary(reply_key, "reply key", length=X25519_KEY_BYTES),
        _READ.uint(ttl, "ttl", MAX_CREDENTIAL_TTL),
        _READ.uint(timestamp, "timestamp", MAX_TIMESTAMP),
        _READ.binary(signature, "signature", length=SIGNATURE_BYTES),
    )


def encode_reply(reply: CredentialsReply) -> tuple[object, ...]:
    return (
        int(reply.status),
        reply.detail,
        reply.username,
        reply.sealed_password,
        reply.expires_at,
        reply.realm,
    )


def decode_reply(fields: tuple[object, ...]) -> CredentialsReply:
    """Total: a reply or ``CredentialsDecodeError``; no error quotes a field."""
    if len(fields) != 6:
        raise CredentialsDecodeError("a credentials reply has 6 fields")
    status_value, detail, username, sealed, expires_at, realm = fields
    try:
        status = CredentialStatus(_READ.uint(status_value, "status", 255))
    except CredentialsDecodeError:
        raise
    except ValueError:
        raise CredentialsDecodeError("unknown credentials status") from None
    return CredentialsReply(
        status,
        _text(detail, "detail"),
        _text(username, "username"),
        _READ.binary(sealed, "sealed password", max_length=MAX_SEALED_BYTES),
        _READ.uint(expires_at, "expires_at", MAX_TIMESTAMP),
        _text(realm, "realm"),
    )


class CredentialIssuer:
    """Supernode side: answers credentials requests from proven peers.

    ``unavailable()`` returns why the node does not relay now (None: it does),
    so a demoted supernode stops handing out credentials at once while its
    existing allocations, and the credentials already issued, keep working.
    """

    def __init__(
        self,
        secret: bytes,
        realm: str,
        *,
        own_key: bytes,
        unavailable: Callable[[], str | None] = lambda: None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the TURN secret must be at least 16 bytes")
        self._secret = secret
        self._own_key = own_key
        self.realm = realm
        self._unavailable = unavailable
        self.outcomes: Counter[str] = Counter()

    def credentials_for(self, peer_key: bytes, now: float, ttl: int) -> TurnCredentials:
        """The credentials ``peer_key`` gets for ``ttl`` seconds (clamped) from ``now``."""
        ttl = min(max(ttl or DEFAULT_CREDENTIAL_TTL, MIN_CREDENTIAL_TTL), MAX_CREDENTIAL_TTL)
        expires_at = int(now) + ttl
        username = rest_api_username(expires_at, peer_id_for(peer_key))
        password = rest_api_password(self._secret, username)
        return TurnCredentials(username, password, self.realm, expires_at)

    def handle(self, request: CredentialsRequest, peer: Peer, now: float) -> tuple[object, ...]:
        """The DHT extension handler: reply fields for ``request`` from ``peer``."""
        reason = self._unavailable()
        if reason is not None:
            # A node that does not relay answers one short, final refusal: it serves no
            # credentials, checks no signature, and its reply (detail cut to
            # MAX_UNAVAILABLE_DETAIL) is always smaller than the request it answers.
            self.outcomes["unavailable"] += 1
            detail = reason[:MAX_UNAVAILABLE_DETAIL]
            return encode_reply(
                CredentialsReply(CredentialStatus.UNAVAILABLE, detail, "", b"", 0, "")
            )
        problem = self._check_proof(request, peer, now)
        if problem is not None:
            self.outcomes["unproven"] += 1
            return encode_reply(
                CredentialsReply(CredentialStatus.UNPROVEN, problem, "", b"", 0, self.realm)
            )
        try:
            box = nacl.public.SealedBox(nacl.public.PublicKey(request.reply_key))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            self.outcomes["bad reply key"] += 1
            return encode_reply(
                CredentialsReply(CredentialStatus.UNAVAILABLE, "bad reply key", "", b"", 0, "")
            )
        credentials = self.credentials_for(peer.public_key, now, request.ttl)
        self.outcomes["issued"] += 1
        return encode_reply(
            CredentialsReply(
                CredentialStatus.ISSUED,
                "",
                credentials.username,
                box.encrypt(credentials.password.encode("ascii")),
                credentials.expires_at,
                credentials.realm,
            )
        )

    def _check_proof(self, request: CredentialsRequest, peer: Peer, now: float) -> str | None:
        if abs(request.timestamp - now) > MAX_REQUEST_SKEW:
            return f"timestamp more than {MAX_REQUEST_SKEW} s from our clock"
        if not verify_signature(
            peer.public_key, request.signed_bytes(self._own_key), request.signature
        ):
            return "signature does not verify for your key and this supernode"
        return None

    def register(self, node: DhtNode) -> None:
        """Serve ``CREDENTIALS_CODE`` on ``node`` (once per node)."""
        node.register_extension(CREDENTIALS_CODE, decode_request, self.handle)


def open_reply(reply: CredentialsReply, key: nacl.public.PrivateKey) -> TurnCredentials:
    """Unseal an ISSUED reply; ``CredentialsError`` if it is not one or does not open."""
    if reply.status is not CredentialStatus.ISSUED:
        raise CredentialsError(f"{reply.status.name.lower()}: {reply.detail}")
    try:
        password = nacl.public.SealedBox(key).decrypt(reply.sealed_password).decode("ascii")
    except (nacl.exceptions.CryptoError, UnicodeDecodeError):
        raise CredentialsError("the sealed password does not open with our key") from None
    expiry_text, sep, _ = reply.username.partition(":")
    if not sep or expiry_text != str(reply.expires_at):
        raise CredentialsError("the username does not carry the stated expiry")
    return TurnCredentials(reply.username, password, reply.realm, reply.expires_at)


async def request_credentials(
    node: DhtNode,
    address: Address,
    relay_key: bytes,
    *,
    ttl: int = DEFAULT_CREDENTIAL_TTL,
    attempts: int = 5,
    retry_delay: float = 0.2,
) -> TurnCredentials:
    """Ask the supernode at ``address`` (identity key ``relay_key``) for TURN credentials,
    signing as ``node``'s identity.

    Silence is retried (bounded: ``attempts`` requests, ``retry_delay``
    doubling between them); UNPROVEN and UNAVAILABLE answers are final.
    """
    key = nacl.public.PrivateKey.generate()
    request = signed_request(node.identity, relay_key, bytes(key.public_key), ttl, time.time())
    fields = encode_request(request)
    last = "no answer"
    delay = retry_delay
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(delay)
            delay *= 2
        result = await node.extension_request(address, CREDENTIALS_CODE, fields, relay_key)
        if result.fields is None:
            last = "no answer"
            continue
        try:
            reply = decode_reply(result.fields)
        except CredentialsDecodeError as error:
            raise CredentialsError(f"malformed reply: {error}") from None
        return open_reply(reply, key)
    raise CredentialsError(f"no credentials after {attempts} attempts ({last})")

"""Stateless checks on TURN requests: what RFC 8656 decides from the message alone.

Pure functions of the decoded request (and the relay's address family), so the
server core keeps only the decisions that need state (5-tuple in use, quotas,
ports) and each RFC step is tested in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from nat.stun import (
    AdditionalAddressFamily,
    AddressFamily,
    EvenPort,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    StunMessage,
    Username,
    check_integrity,
)
from nat.stun.attributes import AttributeType
from relay.auth import Credential, CredentialLookup, NonceIssuer, NonceVerdict
from relay.messages import TurnErrorCode

Address = tuple[str, int]

__all__ = [
    "UDP_PROTOCOL",
    "AuthFailure",
    "Authenticated",
    "address_family",
    "allocate_refusal",
    "authenticate",
    "desired_lifetime",
    "has_fingerprint",
]

UDP_PROTOCOL = 17  # RFC 8656 §18.10: "the value 17 (UDP)"


def address_family(ip: str) -> AddressFamily:
    return AddressFamily.IPV6 if ":" in ip else AddressFamily.IPV4


def allocate_refusal(message: StunMessage, relay_family: AddressFamily) -> TurnErrorCode | None:
    """RFC 8656 §7.2 steps 3 and 5-9 (step 4, DONT-FRAGMENT, is a 420 decided earlier)."""
    transport = message.get(RequestedTransport)
    if transport is None:
        # Step 3: "If not, or if the attribute is invalid, the server rejects ... 400".
        return TurnErrorCode.BAD_REQUEST
    if transport.protocol != UDP_PROTOCOL:
        # Step 3: "... a protocol that is not supported by the server, ... 442".
        return TurnErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL
    even_port = message.get(EvenPort)
    requested_family = message.get(RequestedAddressFamily)
    additional_family = message.get(AdditionalAddressFamily)
    if message.get(ReservationToken) is not None:
        # Step 5: with EVEN-PORT or an address family attribute, 400; otherwise the
        # token must be valid, and we never hand out tokens: 508.
        if even_port or requested_family or additional_family:
            return TurnErrorCode.BAD_REQUEST
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    if requested_family is not None and additional_family is not None:
        # Step 6: "both REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY ... 400".
        return TurnErrorCode.BAD_REQUEST
    if requested_family is not None and requested_family.family != relay_family:
        # Step 7: an address family the server does not relay: 440.
        return TurnErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED
    if additional_family is not None and additional_family.family != AddressFamily.IPV6:
        # Step 9: ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6, else 400.
        return TurnErrorCode.BAD_REQUEST
    if even_port is not None and even_port.reserve:
        # Step 8: we do not reserve port pairs: "If the server cannot satisfy the
        # request, then the server rejects the request with a 508".
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    return None


def desired_lifetime(message: StunMessage, default: int, maximum: int) -> int:
    """RFC 8656 §7.2/§7.3: min(requested, maximum), but never below the default;
    an explicit zero stays zero (Refresh deletes)."""
    requested = message.get(Lifetime)
    if requested is None:
        return default
    if requested.value == 0:
        return 0
    return max(min(requested.value, maximum), default)


def has_fingerprint(message: StunMessage) -> bool:
    """Answer FINGERPRINT with FINGERPRINT (RFC 8489 §7.3: the client may demultiplex on it)."""
    return bool(message.attributes) and (
        message.attributes[-1].attribute_type == AttributeType.FINGERPRINT
    )


@dataclass(frozen=True)
class Authenticated:
    """A request that passed RFC 8489 §9.2.4: who sent it and how to sign the answer."""

    username: str
    credential: Credential
    sha256: bool


@dataclass(frozen=True)
class AuthFailure:
    """Why not; ``challenge``: the error carries REALM and a fresh NONCE."""

    code: TurnErrorCode
    challenge: bool


def authenticate(
    message: StunMessage,
    data: bytes,
    client: Address,
    now: float,
    *,
    realm: str,
    credentials: CredentialLookup,
    nonces: NonceIssuer,
    wall: float | None = None,
) -> Authenticated | AuthFailure:
    """RFC 8489 §9.2.4, the long-term credential mechanism, in the RFC's order.

    ``now`` is the core's monotonic time (nonces); ``wall`` is unix time from the
    adapter, only for credentials that expire (None: such credentials are refused)."""
    sha256 = message.get(MessageIntegritySha256) is not None
    if message.get(MessageIntegrity) is None and not sha256:
        # "If the message does not contain a MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256
        # attribute, the server MUST generate an error response with an error code of
        # 401 (Unauthenticated)" with REALM and NONCE.
        return AuthFailure(TurnErrorCode.UNAUTHENTICATED, challenge=True)
    username = message.get(Username)
    request_realm = message.get(Realm)
    nonce = message.get(Nonce)
    if username is None or request_realm is None or nonce is None:
        # "If the message contains a MESSAGE-INTEGRITY or a MESSAGE-INTEGRITY-SHA256
        # attribute, but is missing either the USERNAME or USERHASH, REALM, or NONCE
        # attribute, the server MUST generate an error response with an error code
        # of 400 (Bad Request)."
        return AuthFailure(TurnErrorCode.BAD_REQUEST, challenge=False)
    credential = credentials(username.value, realm) if request_realm.value == realm else None
    expires = None if credential is None else credential.expires
    if expires is not None and (wall is None or expires < wall):
        credential = None  # an expired REST credential is as unknown as a wrong one
    if credential is None or not check_integrity(data, credential.key):
        # "If the value of the USERNAME ... attribute is not valid" / "If the resulting
        # value does not match the contents of the MESSAGE-INTEGRITY ... 401".
        return AuthFailure(TurnErrorCode.UNAUTHENTICATED, challenge=True)
    if nonces.verify(nonce.value, client, now) is not NonceVerdict.VALID:
        # "If the NONCE is no longer valid, the server MUST generate an error response
        # with an error code of 438 (Stale Nonce)" carrying a new NONCE and REALM.
        return AuthFailure(TurnErrorCode.STALE_NONCE, challenge=True)
    return Authenticated(username.value, credential, sha256)

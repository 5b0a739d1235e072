"""The TURN core's one response path: every answer to a request is built here.

RFC 8489 §6.3 asks that an error after authentication carry MESSAGE-INTEGRITY
like a success; keeping success, error and the Allocate success in one place
(with the refusal counter) makes that, SOFTWARE and FINGERPRINT uniform, and
gives the metrics one spot that sees every refusal.
"""

from __future__ import annotations

import logging
from collections import Counter, deque

from nat.stun import (
    AddressErrorCode,
    AddressFamily,
    Attribute,
    ErrorCode,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    Software,
    StunClass,
    StunMessage,
    StunMethod,
    UnknownAttributes,
    XorMappedAddress,
    XorRelayedAddress,
    encode_message,
)
from relay.allocation import FiveTuple, PendingAllocate
from relay.messages import ToClient, TurnErrorCode
from relay.requests import Authenticated, has_fingerprint

__all__ = ["MAX_AUTH_REFUSALS", "ResponseBuilder"]

Address = tuple[str, int]
logger = logging.getLogger("relay.server")
MAX_AUTH_REFUSALS = 256  # refusals kept for the adapter's log between two drains


class ResponseBuilder:
    """Encodes responses for one relay (its SOFTWARE) and counts refusals by code."""

    def __init__(self, software: str) -> None:
        self._software = software
        self.refusals: Counter[int] = Counter()
        # Authentication/abuse refusals (client address, code) for the adapter's fail2ban
        # style log: 403s, and 401s to requests that carried credentials (a 401 to one
        # without is the normal challenge of every first request, not a refusal).
        self.auth_refusals: deque[tuple[Address, int]] = deque(maxlen=MAX_AUTH_REFUSALS)

    def success(
        self,
        five_tuple: FiveTuple,
        request: StunMessage,
        auth: Authenticated,
        attributes: list[Attribute],
    ) -> ToClient:
        """A success answer protected with the requester's credential."""
        fingerprint = has_fingerprint(request)
        data = self.encode(
            request, StunClass.SUCCESS, attributes, auth.credential.key, auth.sha256, fingerprint
        )
        return ToClient(five_tuple, data)

    def error(
        self,
        five_tuple: FiveTuple,
        request: StunMessage,
        code: TurnErrorCode,
        auth: Authenticated | None,
        extra: list[Attribute] | None = None,
    ) -> ToClient:
        """The one place error responses are built (and counted)."""
        self.refusals[int(code)] += 1
        if code is TurnErrorCode.FORBIDDEN or (
            code is TurnErrorCode.UNAUTHENTICATED
            and (
                request.get(MessageIntegrity) is not None
                or request.get(MessageIntegritySha256) is not None
            )
        ):
            self.auth_refusals.append((five_tuple.client, int(code)))
        logger.debug(
            "%s from %s refused: %d %s", request.method.name, five_tuple.client, code, code.reason
        )
        attributes: list[Attribute] = [ErrorCode(int(code), code.reason), *(extra or [])]
        fingerprint = has_fingerprint(request)
        key = None if auth is None else auth.credential.key
        sha256 = False if auth is None else auth.sha256
        return ToClient(
            five_tuple,
            self.encode(request, StunClass.ERROR, attributes, key, sha256, fingerprint),
        )

    def binding(self, five_tuple: FiveTuple, request: StunMessage) -> ToClient:
        """RFC 8489 §6.3.1: the reflexive address, no authentication (420 on unknown
        comprehension-required attributes)."""
        unknown = request.unknown_comprehension_required()
        if unknown:
            return self.error(
                five_tuple,
                request,
                TurnErrorCode.UNKNOWN_ATTRIBUTE,
                None,
                [UnknownAttributes(unknown)],
            )
        attributes: list[Attribute] = [XorMappedAddress(five_tuple.client)]
        fingerprint = has_fingerprint(request)
        data = self.encode(request, StunClass.SUCCESS, attributes, None, False, fingerprint)
        return ToClient(five_tuple, data)

    def allocate_success(
        self, five_tuple: FiveTuple, relayed: Address, key: bytes, pending: PendingAllocate
    ) -> bytes:
        """RFC 8656 §7.2: XOR-RELAYED-ADDRESS, LIFETIME and XOR-MAPPED-ADDRESS.

        Returned as bytes: the allocation keeps them to answer a retransmission.
        """
        request = StunMessage(StunMethod.ALLOCATE, StunClass.REQUEST, pending.transaction_id)
        attributes: list[Attribute] = [
            XorRelayedAddress(relayed),
            Lifetime(pending.lifetime),
            XorMappedAddress(five_tuple.client),
        ]
        if pending.ipv6_refused:
            # RFC 8656 §7.2 (dual allocation): we relay one family; ADDRESS-ERROR-CODE
            # tells the client why it got no IPv6 relayed address.
            attributes.append(
                AddressErrorCode(AddressFamily.IPV6, 440, "Address Family not Supported")
            )
        return self.encode(
            request,
            StunClass.SUCCESS,
            attributes,
            key,
            pending.integrity_sha256,
            pending.fingerprint,
        )

    def encode(
        self,
        request: StunMessage,
        cls: StunClass,
        attributes: list[Attribute],
        key: bytes | None,
        sha256: bool,
        fingerprint: bool,
    ) -> bytes:
        """Any answer to ``request``: its method and transaction id, our SOFTWARE."""
        response = StunMessage(
            request.method,
            cls,
            request.transaction_id,
            (*attributes, Software(self._software)),
        )
        return encode_message(
            response, integrity_key=key, integrity_sha256=sha256, fingerprint=fingerprint
        )

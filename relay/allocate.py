"""The Allocate decision (RFC 8656 §7.2 after authentication): refuse, or a new allocation.

The order is the RFC's and the operator's: what the message alone decides
(``relay.requests.allocate_refusal``), then the injected admission policy, the
relay's capacity, the per-identity and per-IP quota, and a relayed port. Kept
apart from the server core so the whole admission order reads in one place; the
core only registers the result and asks its runner to open the socket.
"""

from __future__ import annotations

import random
from dataclasses import replace

from nat.stun import AdditionalAddressFamily, AddressFamily, EvenPort, StunMessage
from relay.allocation import Allocation, FiveTuple, PendingAllocate
from relay.config import TurnConfig
from relay.messages import TurnErrorCode
from relay.ports import PortPool
from relay.quota import AllocationCounter
from relay.requests import Authenticated, allocate_refusal, desired_lifetime, has_fingerprint

__all__ = ["MAX_BIND_ATTEMPTS", "new_allocation", "next_bind_attempt"]

MAX_BIND_ATTEMPTS = 8  # relayed ports tried before answering 508


def new_allocation(
    five_tuple: FiveTuple,
    message: StunMessage,
    auth: Authenticated,
    *,
    config: TurnConfig,
    family: AddressFamily,
    held: int,
    counter: AllocationCounter,
    ports: PortPool,
    rng: random.Random,
    now: float,
) -> Allocation | TurnErrorCode:
    """A pending allocation holding a port, or why not (``held``: allocations in place)."""
    refusal = allocate_refusal(message, family)
    if refusal is not None:
        return refusal
    if config.admission is not None and not config.admission(five_tuple):
        # RFC 8656 §7.2: "If the server cannot satisfy the request, then the server
        # rejects the request with a 508 (Insufficient Capacity) error".
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    if held >= config.quota.max_allocations:
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    identity = auth.credential.identity
    if counter.would_exceed(config.quota, identity, five_tuple.client[0]):
        # Step 10: "the server MAY choose to reject the request with a 486".
        return TurnErrorCode.ALLOCATION_QUOTA_REACHED
    even_port = message.get(EvenPort) is not None
    port = ports.take(rng, even=even_port)
    if port is None:
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    lifetime = desired_lifetime(message, config.default_lifetime, config.max_lifetime)
    return Allocation(
        five_tuple,
        username=auth.username,
        identity=identity,
        integrity_key=auth.credential.key,
        port=port,
        lifetime=max(lifetime, 1),
        now=now,
        bandwidth=config.quota.bandwidth_bytes_per_second,
        burst=config.quota.burst_seconds,
        pending=PendingAllocate(
            message.transaction_id,
            lifetime,
            auth.sha256,
            has_fingerprint(message),
            even_port,
            0,
            message.get(AdditionalAddressFamily) is not None,
        ),
    )


def next_bind_attempt(pending: PendingAllocate) -> PendingAllocate | None:
    """The same pending Allocate one port later, or None once ``MAX_BIND_ATTEMPTS`` failed."""
    if pending.bind_attempts + 1 >= MAX_BIND_ATTEMPTS:
        return None
    return replace(pending, bind_attempts=pending.bind_attempts + 1)

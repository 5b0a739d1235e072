"""Limits on what clients can make the relay hold and carry.

Fixed mechanism, injected numbers: ``QuotaConfig`` is passed to the server by
the operator (CLI) or by the p2pnode layer (per-identity policy). Counting is
exact: every allocation is counted once per identity and per source IP, and
released exactly once when it is deleted.

The bandwidth cap is a token bucket per allocation and direction, sized for
one audio+video call (not a byte budget: a call may last hours). Excess packets
are dropped and counted, the allocation lives on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BANDWIDTH_BYTES_PER_SECOND",
    "AllocationCounter",
    "QuotaConfig",
    "TokenBucket",
]

# 2.5 Mbit/s per direction: one 720p video + opus call with headroom.
DEFAULT_BANDWIDTH_BYTES_PER_SECOND = 2_500_000 // 8
# One second of burst: a video key frame arrives as a burst of packets.
DEFAULT_BURST_SECONDS = 1.0


@dataclass(frozen=True)
class QuotaConfig:
    """Bounds on relay state and traffic; every field is a hard cap."""

    max_allocations: int = 1000  # total; beyond it 508 Insufficient Capacity
    max_allocations_per_identity: int = 10  # 486 Allocation Quota Reached
    max_allocations_per_source_ip: int = 20  # 486 as well
    max_permissions_per_allocation: int = 32  # 508 on CreatePermission
    max_channels_per_allocation: int = 32  # 508 on ChannelBind
    bandwidth_bytes_per_second: int = DEFAULT_BANDWIDTH_BYTES_PER_SECOND  # per direction
    burst_seconds: float = DEFAULT_BURST_SECONDS

    def __post_init__(self) -> None:
        for name in (
            "max_allocations",
            "max_allocations_per_identity",
            "max_allocations_per_source_ip",
            "max_permissions_per_allocation",
            "max_channels_per_allocation",
            "bandwidth_bytes_per_second",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.burst_seconds <= 0:
            raise ValueError("burst_seconds must be positive")


class TokenBucket:
    """Bytes per second with a burst; ``take`` is the per-packet hot path (no allocation)."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, size: int, now: float) -> bool:
        """Spend ``size`` tokens if available; False means drop the packet."""
        tokens = self._tokens
        elapsed = now - self._stamp
        if elapsed > 0:
            tokens = min(self._burst, tokens + elapsed * self._rate)
            self._stamp = now
        if tokens < size:
            self._tokens = tokens
            return False
        self._tokens = tokens - size
        return True


class AllocationCounter:
    """Live allocations per identity and per source IP, for the 486 quota checks."""

    __slots__ = ("_by_identity", "_by_source")

    def __init__(self) -> None:
        self._by_identity: Counter[str] = Counter()
        self._by_source: Counter[str] = Counter()

    def would_exceed(self, config: QuotaConfig, identity: str, source_ip: str) -> bool:
        """RFC 8656 §7.2 step 10: "the server MAY choose to reject the request with a
        486 (Allocation Quota Reached) error if it feels the client is trying to
        exceed some locally defined allocation quota"."""
        return (
            self._by_identity[identity] >= config.max_allocations_per_identity
            or self._by_source[source_ip] >= config.max_allocations_per_source_ip
        )

    def add(self, identity: str, source_ip: str) -> None:
        self._by_identity[identity] += 1
        self._by_source[source_ip] += 1

    def remove(self, identity: str, source_ip: str) -> None:
        for counter, key in ((self._by_identity, identity), (self._by_source, source_ip)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def identities(self) -> int:
        return len(self._by_identity)

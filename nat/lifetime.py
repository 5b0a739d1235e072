"""How long does the NAT keep an idle UDP mapping? (RFC 5780 §4.6, bounded), sans-IO.

RFC 5780 §4.6: "The client begins by sending a Binding Request from a port X
... a second port Y is then used to send a Binding Request with RESPONSE-PORT
set to the port of X's mapped address ... If the response is received on X, the
binding is still alive." Any packet through a mapping refreshes it (Linux
refreshes on both directions), so each checkpoint T gets its *own* keeper
socket, tested exactly once, T seconds after its only exchange. The answer is
an interval: alive at ``lower``, gone at ``upper`` (either may be unknown).

Bounded: checkpoints are a fixed short list chosen by the caller (the CLI's
``--lifetime MAX`` uses 2, 4, 8 ... up to MAX seconds, MAX at most 300).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nat.drops import DropCounter
from nat.stun.attributes import Address, ResponsePort, XorMappedAddress
from nat.stun.client import TransactionTable
from nat.stun.message import StunClass, StunDecodeError, decode_message
from nat.stun.server import Transmit
from nat.stun.transaction import RetransmitPolicy

__all__ = [
    "MAX_CHECKPOINTS",
    "MAX_LIFETIME_PROBE",
    "MappingLifetime",
    "MappingLifetimeProbe",
    "checkpoints_up_to",
]

logger = logging.getLogger(__name__)

MAX_LIFETIME_PROBE = 300.0
MAX_CHECKPOINTS = 10
LIFETIME_POLICY = RetransmitPolicy(rto=0.2, rc=4, rm=4)


def checkpoints_up_to(maximum: float) -> tuple[float, ...]:
    """2, 4, 8, ... seconds, then ``maximum`` itself (at most ``MAX_CHECKPOINTS`` of them)."""
    if not 0 < maximum <= MAX_LIFETIME_PROBE:
        raise ValueError(f"the lifetime probe is bounded to (0, {MAX_LIFETIME_PROBE}] seconds")
    points: list[float] = []
    value = 2.0
    while value < maximum and len(points) < MAX_CHECKPOINTS - 1:
        points.append(value)
        value *= 2
    points.append(maximum)
    return tuple(points)


@dataclass(frozen=True)
class MappingLifetime:
    """The idle mapping was alive after ``lower`` s and gone after ``upper`` s (None: unknown)."""

    lower: float | None
    upper: float | None
    checkpoints: tuple[float, ...]


@dataclass(frozen=True)
class _Key:
    kind: str  # "keep" (test I from a keeper) or "check" (RESPONSE-PORT from the asker)
    index: int


class MappingLifetimeProbe:
    """Keepers open mappings at ``start``; at each checkpoint the asker probes one of them."""

    def __init__(
        self,
        server: Address,
        keepers: Sequence[Address],
        asker: Address,
        checkpoints: Sequence[float],
        *,
        random_bytes: Callable[[int], bytes],
        policy: RetransmitPolicy = LIFETIME_POLICY,
        drops: DropCounter | None = None,
    ) -> None:
        if len(keepers) != len(checkpoints) or not 0 < len(checkpoints) <= MAX_CHECKPOINTS:
            raise ValueError("one keeper socket per checkpoint, at most MAX_CHECKPOINTS")
        self.server = server
        self.keepers = tuple(keepers)
        self.asker = asker
        self.checkpoints = tuple(checkpoints)
        self._now = 0.0
        self._drops = drops or DropCounter(logger, lambda: self._now)
        self._table: TransactionTable[_Key] = TransactionTable(policy, random_bytes)
        self._mapped: dict[int, Address] = {}
        self._due: dict[int, float] = {}  # keeper index -> time to check it
        self._check_tids: dict[bytes, int] = {}
        self._alive: set[int] = set()
        self._dead: set[int] = set()
        self._started = False

    def start(self, now: float) -> None:
        if self._started:
            raise RuntimeError("probe already started")
        self._started = True
        self._now = now
        for index, keeper in enumerate(self.keepers):
            self._table.start(_Key("keep", index), keeper, self.server, (), now)

    def receive(self, data: bytes, source: Address, local: Address, now: float) -> None:
        self._now = now
        try:
            message = decode_message(data)
        except StunDecodeError as error:
            self._drops.drop("lifetime: malformed", str(error))
            return
        index = self._check_tids.get(message.transaction_id)
        if index is not None and message.cls is StunClass.SUCCESS:
            # The answer to the asker's request, delivered through keeper ``index``'s
            # mapping: alive if it reached that keeper.
            if local == self.keepers[index] and index not in self._dead:
                self._alive.add(index)
                self._table.cancel(message.transaction_id)
            return
        entry = self._table.match(message, local)
        if entry is None or entry.key.kind != "keep":
            self._drops.drop("lifetime: unmatched", str(source))
            return
        mapped = message.get(XorMappedAddress)
        if mapped is None:
            self._dead.add(entry.key.index)  # no mapping to watch: counts as unknown below
            return
        self._mapped[entry.key.index] = mapped.address
        self._due[entry.key.index] = now + self.checkpoints[entry.key.index]

    def handle_timeout(self, now: float) -> None:
        self._now = now
        for entry in self._table.handle_timeout(now):
            if entry.key.kind == "check" and entry.key.index not in self._alive:
                self._dead.add(entry.key.index)
            elif entry.key.kind == "keep":
                self._dead.add(entry.key.index)
                self._mapped.pop(entry.key.index, None)
        for index, due in list(self._due.items()):
            if now >= due:
                del self._due[index]
                # RFC 5780 §4.6: from Y, "with RESPONSE-PORT set to the port of X's mapped address".
                port = ResponsePort(self._mapped[index][1])
                tid = self._table.start(_Key("check", index), self.asker, self.server, (port,), now)
                self._check_tids[tid] = index

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._table.next_deadline(), *self._due.values()) if d is not None]
        return min(deadlines, default=None)

    def take_transmits(self) -> list[Transmit]:
        return self._table.take_transmits()

    @property
    def done(self) -> bool:
        return self._started and not self._due and len(self._table) == 0

    def result(self) -> MappingLifetime:
        measured = set(self._mapped)
        alive = sorted(self.checkpoints[i] for i in self._alive & measured)
        dead = sorted(self.checkpoints[i] for i in (self._dead & measured) - self._alive)
        upper = dead[0] if dead else None
        below = [t for t in alive if upper is None or t < upper]
        return MappingLifetime(below[-1] if below else None, upper, self.checkpoints)

"""Finding relays: rendezvous buckets in the DHT, STUN health checks, keep the best two.

Where adverts live: a supernode files its RELAY_ADVERT under the rendezvous
subject ``relays/<node_id[0] % 16>``. RELAY_ADVERT is a contested kind, so the
key ignores the owner and every supernode of a bucket meets under one DHT key
(``relay_key(bucket)``); sixteen buckets spread the load over sixteen sets of
storing nodes, and a peer fetches a few random buckets to find candidates.

The selection is a sans-IO core (``RelaySelector``): candidates, probe results
and ``now`` in; which candidates to probe, the chosen relays and the next
deadline out. The asyncio layer (``RelayFinder``) fetches from the DHT, probes
with a STUN Binding request (``stun_probe``, the nat codec) and measures RTT.

Invariants:
- At most ``MAX_CANDIDATES`` candidates are held, however many adverts the DHT
  returns; the least attractive are forgotten first.
- A chosen relay stays chosen while it answers (no flapping to a relay a few
  milliseconds faster); a relay that stops answering is dropped at once and
  replaced by the best healthy candidate, and retried only after a backoff.
- A relay that advertises no room (load >= capacity) is never newly chosen.
- Adverts are trusted only as far as their signature (checked by the DHT on
  read) and our own health check.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from nat.drops import DropCounter
from nat.probe import binding_rtt
from nat.stun import (
    StunClass,
    StunDecodeError,
    StunMessage,
    StunMethod,
    XorMappedAddress,
    decode_message,
    encode_message,
)
from nat.stun.probe import budget_policy
from p2pnode.connectivity.relay_advert import (
    RelayAdvert,
    RelayAdvertDecodeError,
    decode_relay_advert,
)
from p2pnode.records import RecordKind, SignedRecord, record_key

__all__ = [
    "DEFAULT_KEEP",
    "MAX_CANDIDATES",
    "RELAY_BUCKETS",
    "CandidateState",
    "RelayCandidate",
    "RelayFinder",
    "RelaySelector",
    "SelectorConfig",
    "candidates_from_records",
    "relay_bucket",
    "relay_key",
    "relay_subject",
    "stun_probe",
]

logger = logging.getLogger(__name__)

RELAY_BUCKETS = 16
SUBJECT_PREFIX = "relays/"
DEFAULT_KEEP = 2  # Skype-style: one relay to use, one warm spare
MAX_CANDIDATES = 64  # adverts held at once, whatever the DHT returns
STUN_PROBE_TIMEOUT = 2.0  # seconds for one health check, retransmits included
STUN_PROBE_ATTEMPTS = 3  # RFC 8489 §6.2.1 retransmits, shortened: this is a liveness check
MAX_STUN_RESPONSE_BYTES = 1500
SWITCH_FACTOR = 0.5  # a spare replaces a working choice only if its score is half as large

Address = tuple[str, int]


def relay_bucket(node_id: bytes) -> int:
    """The rendezvous bucket a supernode publishes under: ``node_id[0] % 16``."""
    if not node_id:
        raise ValueError("empty node id")
    return node_id[0] % RELAY_BUCKETS


def relay_subject(bucket: int) -> str:
    """``relays/<bucket>``, the subject of every advert of that bucket."""
    if not 0 <= bucket < RELAY_BUCKETS:
        raise ValueError(f"bucket must be in 0..{RELAY_BUCKETS - 1}")
    return f"{SUBJECT_PREFIX}{bucket}"


def relay_key(bucket: int) -> bytes:
    """The DHT key where all adverts of ``bucket`` meet (owner-independent: contested kind)."""
    return record_key(RecordKind.RELAY_ADVERT, b"", relay_subject(bucket))


@dataclass(frozen=True, slots=True)
class RelayCandidate:
    """One supernode's advert, as signed by ``owner`` (its Ed25519 public key)."""

    owner: bytes
    advert: RelayAdvert
    seq: int
    expires_at: int

    @property
    def probe_address(self) -> tuple[str, Address]:
        """("udp"|"tcp", address) to health-check: UDP when offered, else TCP."""
        if self.advert.udp:
            return "udp", self.advert.udp[0]
        return "tcp", self.advert.tcp[0]


def candidates_from_records(
    records: Iterable[SignedRecord],
    now: float,
    drops: DropCounter,
    *,
    exclude_owner: bytes | None = None,
) -> list[RelayCandidate]:
    """Decode relay adverts, newest per owner; bad or stale ones are dropped and counted."""
    newest: dict[bytes, RelayCandidate] = {}
    for record in records:
        if record.kind is not RecordKind.RELAY_ADVERT:
            drops.drop("advert-wrong-kind")
            continue
        if not record.subject.startswith(SUBJECT_PREFIX):
            drops.drop("advert-wrong-subject", record.subject[:40])
            continue
        if record.expires_at <= now:
            drops.drop("advert-expired")
            continue
        if record.owner == exclude_owner:
            continue
        try:
            advert = decode_relay_advert(record.payload)
        except RelayAdvertDecodeError as error:
            drops.drop("advert-undecodable", str(error))
            continue
        known = newest.get(record.owner)
        if known is None or record.seq > known.seq:
            newest[record.owner] = RelayCandidate(
                record.owner, advert, record.seq, record.expires_at
            )
    return list(newest.values())


class CandidateState(enum.Enum):
    UNTESTED = "untested"  # known from an advert, never checked
    PROBING = "probing"  # a health check is in flight
    HEALTHY = "healthy"  # last check answered
    FAILED = "failed"  # last check did not answer; retried after a backoff


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    """Knobs of the selection; defaults suit a phone-call client."""

    keep: int = DEFAULT_KEEP
    recheck_interval: float = 30.0  # seconds between checks of a chosen relay
    failure_backoff: float = 60.0  # first wait before re-checking a failed relay
    max_backoff: float = 900.0
    max_in_flight: int = 4  # concurrent health checks
    max_candidates: int = MAX_CANDIDATES
    rediscover_interval: float = 300.0  # refetch buckets at least this often when short
    # With no usable relay at all, refetch sooner: 5 s, 10 s, 20 s ... up to the above.
    # A node started before any supernode advertised would otherwise wait 300 s.
    empty_rediscover: float = 5.0
    min_dial_back: int = 0  # also short while fewer advertised dial-back servers are known

    def __post_init__(self) -> None:
        if self.keep < 1 or self.max_in_flight < 1 or self.max_candidates < self.keep:
            raise ValueError("keep, max_in_flight >= 1 and max_candidates >= keep")


@dataclass(slots=True)
class _Entry:
    candidate: RelayCandidate
    state: CandidateState = CandidateState.UNTESTED
    rtt: float = math.inf
    checked_at: float = -math.inf
    failures: int = 0
    retry_at: float = -math.inf

    def score(self) -> float:
        """Lower is better: RTT weighted by how busy the relay said it is."""
        return self.rtt * (1.0 + self.candidate.advert.load_fraction)


class RelaySelector:
    """Sans-IO: which relays to check, which two to use. Time is always a parameter."""

    def __init__(self, config: SelectorConfig | None = None) -> None:
        self.config = config or SelectorConfig()
        self._entries: dict[bytes, _Entry] = {}
        self._chosen: list[bytes] = []
        self._last_discovery = -math.inf
        self._empty_discoveries = 0  # discoveries in a row that left nothing usable

    # -- inputs ------------------------------------------------------------

    def add_candidates(self, candidates: Iterable[RelayCandidate], now: float) -> None:
        """Learn adverts (a newer seq replaces the advert, keeps the health record)."""
        self._last_discovery = now
        for candidate in candidates:
            entry = self._entries.get(candidate.owner)
            if entry is None:
                self._entries[candidate.owner] = _Entry(candidate)
            elif candidate.seq > entry.candidate.seq:
                entry.candidate = candidate
        self._forget_expired(now)
        self._bound()
        self._fill(now)
        self._empty_discoveries = 0 if self._usable() else self._empty_discoveries + 1

    def probe_succeeded(self, owner: bytes, rtt: float, now: float) -> None:
        entry = self._entries.get(owner)
        if entry is None:
            return
        entry.state = CandidateState.HEALTHY
        entry.rtt = rtt
        entry.checked_at = now
        entry.failures = 0
        self._fill(now)

    def probe_failed(self, owner: bytes, now: float) -> None:
        entry = self._entries.get(owner)
        if entry is None:
            return
        entry.state = CandidateState.FAILED
        entry.failures += 1
        entry.checked_at = now
        backoff = self.config.failure_backoff * 2 ** min(entry.failures - 1, 16)
        entry.retry_at = now + min(backoff, self.config.max_backoff)
        if owner in self._chosen:
            self._chosen.remove(owner)
        self._fill(now)

    # -- outputs -----------------------------------------------------------

    def chosen(self) -> tuple[RelayCandidate, ...]:
        """The relays to use, best first (at most ``keep``)."""
        return tuple(self._entries[owner].candidate for owner in self._chosen)

    def healthy(self, limit: int = 8) -> tuple[RelayCandidate, ...]:
        """The chosen relays, then other healthy ones with room, best first (home candidates:
        a node attaches to two and needs spares when one dies)."""
        spares = sorted(
            (
                e
                for owner, e in self._entries.items()
                if owner not in self._chosen
                and e.state is CandidateState.HEALTHY
                and e.candidate.advert.has_room
            ),
            key=_Entry.score,
        )
        ranked = [self._entries[owner] for owner in self._chosen] + spares
        return tuple(e.candidate for e in ranked[:limit])

    def state_of(self, owner: bytes) -> CandidateState | None:
        entry = self._entries.get(owner)
        return None if entry is None else entry.state

    def rtt_of(self, owner: bytes) -> float | None:
        entry = self._entries.get(owner)
        return None if entry is None or entry.state is not CandidateState.HEALTHY else entry.rtt

    def __len__(self) -> int:
        return len(self._entries)

    def dial_back_servers(self, limit: int = 8) -> tuple[Address, ...]:
        """STUN servers with dial-back that supernodes advertise, for reachability checks.

        One per supernode, never from one whose health check failed last; healthy
        ones first (fastest first), then untested ones. A lying supernode can cast
        only its own vote: the verdict needs several agreeing servers.
        """
        ranked = sorted(
            (
                e
                for e in self._entries.values()
                if e.candidate.advert.stun and e.state is not CandidateState.FAILED
            ),
            key=lambda e: (e.state is not CandidateState.HEALTHY, e.rtt, e.candidate.owner),
        )
        return tuple(e.candidate.advert.stun[0] for e in ranked[:limit])

    def probes_due(self, now: float) -> list[RelayCandidate]:
        """Candidates to health-check now; they are marked in flight until a result comes."""
        self._forget_expired(now)
        in_flight = sum(1 for e in self._entries.values() if e.state is CandidateState.PROBING)
        budget = self.config.max_in_flight - in_flight
        due = sorted(
            (e for e in self._entries.values() if self._is_due(e, now)),
            key=lambda e: (e.candidate.owner not in self._chosen, self._probe_rank(e)),
        )
        picked = due[: max(budget, 0)]
        for entry in picked:
            entry.state = CandidateState.PROBING
        return [entry.candidate for entry in picked]

    def needs_discovery(self, now: float) -> bool:
        """True when we cannot fill ``keep`` slots from what we know and may fetch again."""
        if self._last_discovery == -math.inf:
            return True
        wanted = self.config.min_dial_back
        if wanted and len(self.dial_back_servers(wanted)) < wanted:
            return now - self._last_discovery >= self.config.rediscover_interval
        if len(self._chosen) >= self.config.keep:
            return False
        if self._usable() >= self.config.keep:
            return False
        return now - self._last_discovery >= self._rediscover_wait()

    def has_due(self, now: float) -> bool:
        """Whether ``probes_due(now)`` would return something (marks nothing)."""
        return any(self._is_due(e, now) for e in self._entries.values())

    def next_deadline(self) -> float | None:
        """When ``probes_due`` may next return something (None: nothing scheduled)."""
        times: list[float] = []
        for entry in self._entries.values():
            if entry.state is CandidateState.UNTESTED:
                return -math.inf
            if entry.state is CandidateState.FAILED:
                times.append(entry.retry_at)
            elif entry.state is CandidateState.HEALTHY:
                times.append(entry.checked_at + self.config.recheck_interval)
        if len(self._chosen) < self.config.keep:
            times.append(self._last_discovery + self._rediscover_wait())
        return min(times) if times else None

    def _usable(self) -> int:
        return sum(
            1
            for e in self._entries.values()
            if e.state is not CandidateState.FAILED and e.candidate.advert.has_room
        )

    def _rediscover_wait(self) -> float:
        """The full interval, or a short doubling one while nothing usable is known."""
        if self._usable() or not self._empty_discoveries:
            return self.config.rediscover_interval
        short = self.config.empty_rediscover * 2.0 ** (self._empty_discoveries - 1)
        return min(short, self.config.rediscover_interval)

    # -- policy ------------------------------------------------------------

    def _probe_rank(self, entry: _Entry) -> tuple[int, float]:
        # Untested first (we know nothing), least loaded first among them.
        return (entry.state is not CandidateState.UNTESTED, entry.candidate.advert.load_fraction)

    def _is_due(self, entry: _Entry, now: float) -> bool:
        if entry.state is CandidateState.PROBING:
            return False
        if entry.state is CandidateState.UNTESTED:
            return True
        if entry.state is CandidateState.FAILED:
            return now >= entry.retry_at
        # Healthy: re-check the chosen ones on schedule; spares only while we are short.
        if now - entry.checked_at < self.config.recheck_interval:
            return False
        return entry.candidate.owner in self._chosen or len(self._chosen) < self.config.keep

    def _fill(self, now: float) -> None:
        """Fill empty slots with the best healthy candidates that have room; then swap the
        worst chosen relay for a spare only if the spare is much better (hysteresis: a choice
        is sticky, so we do not flap between relays a few milliseconds apart)."""
        spares = sorted(
            (
                e
                for owner, e in self._entries.items()
                if owner not in self._chosen
                and e.state is CandidateState.HEALTHY
                and e.candidate.advert.has_room
            ),
            key=_Entry.score,
        )
        free = self.config.keep - len(self._chosen)
        if free > 0:
            self._chosen.extend(e.candidate.owner for e in spares[:free])
            spares = spares[free:]
        self._chosen.sort(key=lambda owner: self._entries[owner].score())
        for spare in spares:
            worst = self._entries[self._chosen[-1]]
            if spare.score() >= SWITCH_FACTOR * worst.score():
                break
            self._chosen[-1] = spare.candidate.owner
            self._chosen.sort(key=lambda owner: self._entries[owner].score())

    def _forget_expired(self, now: float) -> None:
        for owner in [o for o, e in self._entries.items() if e.candidate.expires_at <= now]:
            del self._entries[owner]
            if owner in self._chosen:
                self._chosen.remove(owner)

    def _bound(self) -> None:
        excess = len(self._entries) - self.config.max_candidates
        if excess <= 0:
            return

        def worth(item: tuple[bytes, _Entry]) -> tuple[bool, bool, float]:
            owner, entry = item
            return (
                owner in self._chosen,
                entry.state is not CandidateState.FAILED,
                -entry.score() if entry.rtt != math.inf else -entry.candidate.advert.load_fraction,
            )

        for owner, _ in sorted(self._entries.items(), key=worth)[:excess]:
            del self._entries[owner]


# -- the asyncio layer ---------------------------------------------------------


def _is_binding_success(data: bytes, transaction_id: bytes) -> bool:
    try:
        message = decode_message(data)
    except StunDecodeError:
        return False
    return (
        message.transaction_id == transaction_id
        and message.method is StunMethod.BINDING
        and message.cls is StunClass.SUCCESS
        and message.get(XorMappedAddress) is not None
    )


def _binding_request(transaction_id: bytes) -> bytes:
    return encode_message(
        StunMessage(StunMethod.BINDING, StunClass.REQUEST, transaction_id), fingerprint=True
    )


async def stun_probe(
    transport: str,
    address: Address,
    *,
    time_budget: float = STUN_PROBE_TIMEOUT,
    attempts: int = STUN_PROBE_ATTEMPTS,
) -> float | None:
    """Round-trip time of one STUN Binding to ``address`` over UDP or TCP, None if no answer.

    RFC 8489 §6.2.1: a client over UDP retransmits with a doubling RTO; here
    ``attempts`` sends spread over ``time_budget`` (a health check, not a discovery).
    """
    transaction_id = os.urandom(12)
    request = _binding_request(transaction_id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(time_budget):
            if transport == "tcp":
                await _probe_tcp(address, request, transaction_id)
            else:
                await _probe_udp(address, time_budget, attempts)
    except (TimeoutError, OSError):
        return None
    return loop.time() - started


async def _probe_udp(address: Address, time_budget: float, attempts: int) -> None:
    """RFC 8489 §6.2.1 retransmits spread over the budget: ``nat.stun.probe`` on the driver."""
    if await binding_rtt(address, budget_policy(time_budget, attempts)) is None:
        raise TimeoutError


async def _probe_tcp(address: Address, request: bytes, transaction_id: bytes) -> None:
    """RFC 8489 §6.2.2: over TCP no retransmits; the response follows on the same stream."""
    reader, writer = await asyncio.open_connection(address[0], address[1])
    try:
        writer.write(request)
        await writer.drain()
        header = await reader.readexactly(20)
        length = int.from_bytes(header[2:4], "big")
        if length > MAX_STUN_RESPONSE_BYTES:
            raise OSError("STUN response too long")
        body = await reader.readexactly(length)
        if not _is_binding_success(header + body, transaction_id):
            raise OSError("not a Binding success response")
    except asyncio.IncompleteReadError as error:
        raise OSError("connection closed") from error
    finally:
        writer.close()


Fetch = Callable[[bytes], Awaitable[Sequence[SignedRecord]]]
Probe = Callable[[str, Address], Awaitable[float | None]]


class RelayFinder:
    """The thin async driver of ``RelaySelector``: fetch buckets, probe, keep the best two.

    ``fetch(key)`` is the DHT's ``get`` (records already checked by the DHT's
    acceptance function); ``probe`` defaults to ``stun_probe``.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        own_key: bytes | None = None,
        probe: Probe = stun_probe,
        config: SelectorConfig | None = None,
        buckets_per_fetch: int = 4,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.selector = RelaySelector(config)
        self._fetch = fetch
        self._probe = probe
        self._own_key = own_key
        self._buckets_per_fetch = min(max(buckets_per_fetch, 1), RELAY_BUCKETS)
        self._clock = clock
        self._rng = rng or random.Random()
        self.drops = DropCounter(logger, clock)

    def chosen(self) -> tuple[RelayCandidate, ...]:
        return self.selector.chosen()

    def dial_back_servers(self, limit: int = 8) -> tuple[Address, ...]:
        """Dial-back STUN servers advertised by the supernodes known now."""
        return self.selector.dial_back_servers(limit)

    async def discover(self, buckets: Sequence[int] | None = None) -> int:
        """Fetch some rendezvous buckets (random ones by default); returns adverts learnt."""
        if buckets is None:
            buckets = self._rng.sample(range(RELAY_BUCKETS), self._buckets_per_fetch)
        results = await asyncio.gather(
            *(self._fetch(relay_key(b)) for b in buckets), return_exceptions=True
        )
        records: list[SignedRecord] = []
        for bucket, result in zip(buckets, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                logger.info("fetching relay bucket %d failed: %s", bucket, result)
                continue
            records.extend(result)
        candidates = candidates_from_records(
            records, self._clock(), self.drops, exclude_owner=self._own_key
        )
        self.selector.add_candidates(candidates, self._clock())
        return len(candidates)

    async def check(self) -> tuple[RelayCandidate, ...]:
        """Run every due health check concurrently; returns the chosen relays."""
        due = self.selector.probes_due(self._clock())
        if due:
            async with asyncio.TaskGroup() as group:
                for candidate in due:
                    group.create_task(self._check_one(candidate))
        return self.selector.chosen()

    async def _check_one(self, candidate: RelayCandidate) -> None:
        transport, address = candidate.probe_address
        rtt = await self._probe(transport, address)
        if rtt is None:
            self.selector.probe_failed(candidate.owner, self._clock())
        else:
            self.selector.probe_succeeded(candidate.owner, rtt, self._clock())

    async def refresh(self) -> tuple[RelayCandidate, ...]:
        """One round: discover if short of relays, then check (bounded: at most 3 rounds)."""
        for _ in range(3):
            if self.selector.needs_discovery(self._clock()):
                await self.discover()
            await self.check()
            if not self.selector.has_due(self._clock()):
                break
        return self.selector.chosen()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the chosen relays fresh until ``stop`` is set."""
        while not stop.is_set():
            await self.refresh()
            deadline = self.selector.next_deadline()
            delay = self.selector.config.recheck_interval
            if deadline is not None:
                delay = min(max(deadline - self._clock(), 0.05), delay)
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                continue

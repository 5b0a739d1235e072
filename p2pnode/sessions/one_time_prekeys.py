"""One-time prekeys (OPKs) handed out once, through the owner's mailboxes.

A DHT record gives the same bytes to every reader, so it cannot carry a key meant
for one initiator. Instead the owner uploads a bounded batch of OPK public keys,
each signed by its identity, to each mailbox it chose (different keys at each
mailbox); an initiator asks one of those mailboxes for one (``TAKE_PREKEY``), the
mailbox hands it out once and deletes it, the initiator checks the owner's
signature and uses it in X3DH. The responder deletes the private key when a
session uses it, so the first message of a session stays secret even if the
signed prekey is stolen later.

Why each rule:
- The signature (``OPK_CONTEXT`` + public key, Ed25519 by the owner) stops a
  mailbox from handing out a key of its own: it could then read nothing anyway
  (the signed prekey and identity keys still enter X3DH), but the session would
  lose the OPK's protection without anyone noticing.
- Taking is limited (``TakeLimits``): only a requester that signs the request
  with its key (fresh, bound to this mailbox) may take; per (requester, owner),
  per requester and per owner windows bound how fast a stranger drains an owner's
  batch, and the per-owner window bounds what many made-up keys together drain.
  An empty batch costs nothing but the OPK: sessions open on the signed prekey
  (today's X3DH without OPK), counted at the initiator.

Invariants: ``TakeRateLimiter`` is sans-IO (``now`` in) and holds at most
``TakeLimits.max_tracked`` windows; an untracked requester beyond that bound is
refused, never a crash or an unbounded dict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pnode.identity import Identity, verify_signature

__all__ = [
    "OPK_BATCH",
    "OPK_CONTEXT",
    "OPK_LOW_WATER",
    "OPK_MAX_PER_OWNER",
    "OPK_TAKEN_KEPT",
    "OneTimePrekey",
    "TakeLimits",
    "TakeRateLimiter",
    "TakeVerdict",
    "one_time_prekey_valid",
    "sign_one_time_prekey",
]

OPK_CONTEXT = b"p2pnode-opk-v1\x00"
OPK_BATCH = 100  # the owner tops each mailbox up to this many
OPK_LOW_WATER = 25  # ... when the mailbox reports fewer than this
OPK_MAX_PER_OWNER = 200  # a mailbox holds at most this many of one owner's keys
# a taken key's private half is kept this long for the message that uses it (the
# initiator's outbox may hold the message through the mailbox's 30-day retention)
OPK_TAKEN_KEPT = 31 * 24 * 3600
_HOUR = 3600
_PRUNE_EVERY = 60.0
_DAY = 24 * _HOUR


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    """An X25519 one-time prekey, signed by its owner's identity."""

    public: bytes  # 32 bytes
    signature: bytes  # 64 bytes, Ed25519 by the owner over OPK_CONTEXT + public


def sign_one_time_prekey(owner: Identity, public: bytes) -> OneTimePrekey:
    return OneTimePrekey(public, owner.sign(OPK_CONTEXT + public))


def one_time_prekey_valid(owner_key: bytes, prekey: OneTimePrekey) -> bool:
    """``prekey`` was signed by ``owner_key`` (the initiator and the mailbox check it)."""
    return len(prekey.public) == 32 and verify_signature(
        owner_key, OPK_CONTEXT + prekey.public, prekey.signature
    )


@dataclass(frozen=True, slots=True)
class TakeLimits:
    """How fast keys may be taken from one mailbox (each a fixed window: count, seconds).

    A sender opens one session per peer and needs one key for it; two a day per
    (requester, owner) leave room for a lost answer. The per-owner window is the
    bound against many made-up requester keys: the owner's polls (every minute)
    top up far faster than 60 an hour drain.
    """

    per_pair: tuple[int, int] = (2, _DAY)
    per_requester: tuple[int, int] = (20, _HOUR)
    per_owner: tuple[int, int] = (60, _HOUR)
    max_tracked: int = 50_000  # windows held in memory (reset by a restart)


class TakeVerdict(enum.Enum):
    ALLOWED = "allowed"
    PAIR_LIMITED = "pair-limited"
    REQUESTER_LIMITED = "requester-limited"
    OWNER_LIMITED = "owner-limited"
    TOO_MANY_TRACKED = "too-many-tracked"


class _Scope(enum.IntEnum):
    PAIR = 0
    REQUESTER = 1
    OWNER = 2


class TakeRateLimiter:
    """Fixed windows per (requester, owner), per requester and per owner."""

    def __init__(self, limits: TakeLimits | None = None) -> None:
        self.limits = limits or TakeLimits()
        self._windows: dict[tuple[_Scope, bytes], tuple[float, int]] = {}
        self._pruned_at = -float("inf")

    def __len__(self) -> int:
        return len(self._windows)

    def _count(self, key: tuple[_Scope, bytes], period: int, now: float) -> int:
        start, count = self._windows.get(key, (now, 0))
        return 0 if now - start >= period else count

    def check(self, requester: bytes, owner: bytes, now: float) -> TakeVerdict:
        """Whether one more take is allowed now; ``record`` it once a key was handed out."""
        limits = self.limits
        scopes = (
            ((_Scope.PAIR, requester + owner), limits.per_pair, TakeVerdict.PAIR_LIMITED),
            ((_Scope.REQUESTER, requester), limits.per_requester, TakeVerdict.REQUESTER_LIMITED),
            ((_Scope.OWNER, owner), limits.per_owner, TakeVerdict.OWNER_LIMITED),
        )
        for key, (allowed, period), verdict in scopes:
            if self._count(key, period, now) >= allowed:
                return verdict
        if len(self._windows) + 3 > limits.max_tracked:
            if now - self._pruned_at >= _PRUNE_EVERY:  # a full table costs one pass a minute
                self._pruned_at = now
                self._prune(now)
            if len(self._windows) + 3 > limits.max_tracked:
                return TakeVerdict.TOO_MANY_TRACKED
        return TakeVerdict.ALLOWED

    def record(self, requester: bytes, owner: bytes, now: float) -> None:
        limits = self.limits
        for key, period in (
            ((_Scope.PAIR, requester + owner), limits.per_pair[1]),
            ((_Scope.REQUESTER, requester), limits.per_requester[1]),
            ((_Scope.OWNER, owner), limits.per_owner[1]),
        ):
            start, count = self._windows.get(key, (now, 0))
            if now - start >= period:
                start, count = now, 0
            self._windows[key] = (start, count + 1)

    def _prune(self, now: float) -> None:
        periods = {
            _Scope.PAIR: self.limits.per_pair[1],
            _Scope.REQUESTER: self.limits.per_requester[1],
            _Scope.OWNER: self.limits.per_owner[1],
        }
        self._windows = {
            key: (start, count)
            for key, (start, count) in self._windows.items()
            if now - start < periods[key[0]]
        }

"""Judging records that peers return: decode, then ``accept``, signatures checked once.

A lookup hears the same popular record from many nodes; verifying an Ed25519
signature per copy would dominate a get. So the encodings whose signature held
are cached (bounded, least recently used first out); a cached record still runs
through every other rule of ``accept`` (expiry, key) at each read.

Invariant: ``verify`` never raises. A decoder that fails in any way, even other
than ``RecordDecodeError`` (a ``RecursionError`` from a hostile shape), gives
``UNDECODABLE``; every refusal is counted by reason in ``rejects``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from p2pnode.records import RecordDecodeError, Rejected, SignedRecord, accept, decode_record

__all__ = ["RECORD_CACHE_SIZE", "UNDECODABLE", "RecordReader"]

RECORD_CACHE_SIZE = 1024  # encodings whose signature we already checked
UNDECODABLE = "undecodable"  # read-reject reason of a record that does not decode


class RecordReader:
    """Decodes and accepts records read from peers; counts what it refuses."""

    def __init__(self, cache_size: int = RECORD_CACHE_SIZE) -> None:
        self._cache: OrderedDict[bytes, SignedRecord] = OrderedDict()
        self._cache_size = cache_size
        self.rejects: Counter[str] = Counter()

    def verify(self, encoded: bytes, key: bytes, wall: float) -> SignedRecord | str:
        """The record under ``key`` at wall time ``wall``, or the reason it was refused."""
        cached = self._cache.get(encoded)
        if cached is not None:
            # Passing the verified record as "stored" takes accept's byte-identical path:
            # every rule but the (already checked) signature runs again.
            verdict = accept(cached, cached, key, wall)
        else:
            try:
                record = decode_record(encoded)
            except (RecordDecodeError, RecursionError, ValueError, TypeError):
                self.rejects[UNDECODABLE] += 1
                return UNDECODABLE
            verdict = accept(record, None, key, wall)
        if isinstance(verdict, Rejected):
            self.rejects[verdict.reason.value] += 1
            return verdict.reason.value
        self._cache[encoded] = verdict.record
        self._cache.move_to_end(encoded)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return verdict.record

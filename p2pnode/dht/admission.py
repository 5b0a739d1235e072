"""Who may STORE at this node, and what a STORE gets back: the storing side of a put.

Order of checks, cheapest first, so junk costs no signature verification; the
refusal for each is (status, reason):

1. this node is not a client: REJECTED ``client-mode``;
2. the sender's IP (IPv6: its /64) has STORE budget left: REJECTED ``rate-limited``;
3. the record is at most ``MAX_RECORD_BYTES``: REJECTED ``too-large``;
4. the sender proved its key at this address: it signed our challenge before,
   or the STORE carries its proof over a token we issued to it (``proofs``;
   the core then remembers it as proven): UNPROVEN ``unproven`` or
   ``bad-proof``, with a fresh token to retry with;
5. the record decodes: REJECTED ``undecodable``;
6. ``RecordStore.offer`` (``accept``, then the store's bounds): REJECTED, its reason.

Every refusal is counted in ``RecordStore.rejects`` by reason. STORED and
DUPLICATE answers carry the storer's signed receipt.

Invariant: nothing here holds state per sender beyond the rate limiter's
bounded table; tokens are stateless.
"""

from __future__ import annotations

from nat.ratelimit import TokenBuckets, source_of
from p2pnode.dht.config import DhtConfig
from p2pnode.dht.keys import Contact
from p2pnode.dht.messages import Store, StoreResult, StoreStatus
from p2pnode.dht.proofs import StoreTokens, sign_receipt, store_proof_valid
from p2pnode.dht.storage import RecordStore
from p2pnode.identity import Identity
from p2pnode.records import MAX_RECORD_BYTES, RecordDecodeError, RejectReason, decode_record

__all__ = ["StoreAdmission"]

MAX_DETAIL_CHARS = 200


class StoreAdmission:
    """Answers STOREs for one node: proof of the sender's key first, then the record."""

    def __init__(
        self, identity: Identity, config: DhtConfig, store: RecordStore, secret: bytes
    ) -> None:
        self.identity = identity
        self.client_mode = config.client_mode
        self.store = store
        self.tokens = StoreTokens(secret)
        self._limits: TokenBuckets[str] = TokenBuckets(config.store_rate, config.store_burst)

    def token_for(self, sender: Contact, now: float) -> bytes:
        """The token handed to ``sender`` in NODES and PONG replies (none from a client)."""
        if self.client_mode:
            return b""
        return self.tokens.issue(sender.public_key, sender.address, now)

    def answer(
        self,
        store: Store,
        sender: Contact,
        request_id: bytes,
        proven: bool,
        now: float,
        wall: float | None = None,
        *,
        receipt: bool = True,
    ) -> tuple[StoreResult, bool]:
        """The STORE_RESULT for ``store``, and whether the STORE's proof proved the sender.

        ``proven``: the sender already proved its key at this address (challenge or proof).
        ``receipt``: sign a receipt (the putter asked: it has not proven our key; a
        putter that has gains nothing from one, so we spare the signature).
        ``now`` (monotonic) paces and dates tokens; ``wall`` judges the record (default now).
        """

        def refuse(reason: str, detail: str, token: bytes = b"") -> tuple[StoreResult, bool]:
            self.store.rejects[reason] += 1
            status = StoreStatus.UNPROVEN if token else StoreStatus.REJECTED
            return StoreResult(status, reason, detail[:MAX_DETAIL_CHARS], token), False

        if self.client_mode:
            return refuse("client-mode", "this node does not store records")
        if not self._limits.allow(source_of(sender.address[0]), now):
            return refuse("rate-limited", "too many STOREs from this IP")
        if len(store.record) > MAX_RECORD_BYTES:
            size = len(store.record)
            return refuse(RejectReason.TOO_LARGE.value, f"{size} > {MAX_RECORD_BYTES}")
        newly_proven = False
        if not proven:
            unproven = self._unproven(store, sender, now)
            if unproven is not None:
                token = self.tokens.issue(sender.public_key, sender.address, now)
                return refuse(*unproven, token)
            newly_proven = True
        try:
            record = decode_record(store.record)
        except RecordDecodeError as error:
            return refuse("undecodable", str(error))[0], newly_proven
        except (RecursionError, ValueError, TypeError) as error:  # a decoder that is not total
            return refuse("undecodable", type(error).__name__)[0], newly_proven
        outcome = self.store.offer(
            record,
            store.key,
            now if wall is None else wall,
            source=sender.address[0],  # storage charges contested keys per source network
            sender=sender.public_key,
        )
        if not outcome.stored:
            detail = outcome.detail[:MAX_DETAIL_CHARS]
            return StoreResult(StoreStatus.REJECTED, outcome.reason, detail), newly_proven
        status = StoreStatus.DUPLICATE if outcome.duplicate else StoreStatus.STORED
        signed = b""
        if receipt:
            signed = sign_receipt(
                self.identity, request_id, sender.public_key, store.key, store.record, status
            )
        return StoreResult(status, "", "", b"", signed), newly_proven

    def _unproven(self, store: Store, sender: Contact, now: float) -> tuple[str, str] | None:
        """Why the STORE's proof does not prove ``sender``'s key (reason, detail), or None."""
        if not store.proof:
            return "unproven", "prove your key: sign the token and send the STORE again"
        if not self.tokens.valid(store.token, sender.public_key, sender.address, now):
            return "bad-proof", "token not ours for this key and address, or too old"
        if not store_proof_valid(
            sender.public_key, store.proof, store.token, self.identity.public_key
        ):
            return "bad-proof", "the proof's signature does not verify"
        return None

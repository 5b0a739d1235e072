"""Who may STORE at us, and proof that a node took a STORE: tokens, proofs, receipts.

A STORE is admitted only from a sender that has proven it holds the key of its
node id at its address, once per contact. Either we challenged it (PING/PONG,
see ``protocol.PONG_CONTEXT``), or its STORE carries a *proof*: its signature
over ``STORE_PROOF_CONTEXT`` + a token we handed out to it + our public key. That
is the same challenge-response folded into the put: the token is the nonce, the
NODES reply of the put's lookup delivers it (PONGs and the refusal of an
unproven STORE carry one too), so a put needs no extra round trip and a
client-mode node proves its key without entering anyone's table.

Invariants:
- Tokens are stateless (as BEP 5's ``get_peers`` tokens): a keyed BLAKE2b of the
  requester's key, its address and the time slot, under a secret drawn once
  from the core's random source. Handing one out costs a hash and no memory, so
  a flood of requests makes us hold nothing.
- A token is valid in the slot it was issued in and the next one: at least
  ``TOKEN_SLOT`` seconds, at most twice that. An older token, one issued to
  another key or another address, or one from another node fails.
- A proof binds the token (hence the sender's key, its address and the time
  slot) and the receiver's key: it is no good from another key or address, at
  another node, or after its slot. Once verified, the receiver remembers the
  sender as proven at that address, like a PONG.
- The putter signs a token once and reuses the proof while the token is fresh.
- A *receipt* (the storing node's signature over our random request id, our
  key, the STORE key and record, and the status) is what makes a put count a
  node it has not proven yet: a node that merely claims a key in a lookup
  reply cannot sign for it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict

from p2pnode.dht.keys import Address
from p2pnode.dht.messages import TOKEN_BYTES, Store
from p2pnode.identity import Identity, verify_signature

__all__ = [
    "RECEIPT_CONTEXT",
    "STORE_PROOF_CONTEXT",
    "TOKEN_BYTES",
    "TOKEN_SLOT",
    "TOKEN_USE_WITHIN",
    "HeldTokens",
    "StoreTokens",
    "receipt_valid",
    "sign_receipt",
    "sign_store_proof",
    "store_proof_valid",
]

TOKEN_SLOT = 300.0  # seconds; a token stays valid for one to two slots
TOKEN_USE_WITHIN = 240.0  # a token we received is used this long (a slot, minus margin)
STORE_PROOF_CONTEXT = b"p2pnode-dht-v1/store\x00"
RECEIPT_CONTEXT = b"p2pnode-dht-v1/receipt\x00"


class StoreTokens:
    """Issue and check tokens bound to (key, address, time slot); no per-token state."""

    def __init__(self, secret: bytes, *, slot: float = TOKEN_SLOT) -> None:
        if len(secret) < 16:
            raise ValueError("token secret shorter than 16 bytes")
        self._secret = secret
        self.slot = slot

    def _token(self, public_key: bytes, address: Address, slot: int) -> bytes:
        host, port = address
        data = public_key + slot.to_bytes(8, "big", signed=True) + port.to_bytes(2, "big")
        return hashlib.blake2b(
            data + host.encode(), key=self._secret, digest_size=TOKEN_BYTES
        ).digest()

    def issue(self, public_key: bytes, address: Address, now: float) -> bytes:
        """The token for ``public_key`` sending from ``address`` at ``now``."""
        return self._token(public_key, address, int(now // self.slot))

    def valid(self, token: bytes, public_key: bytes, address: Address, now: float) -> bool:
        """Issued by us to this key at this address in this slot or the previous one."""
        if len(token) != TOKEN_BYTES:
            return False
        current = int(now // self.slot)
        return any(
            hmac.compare_digest(token, self._token(public_key, address, slot))
            for slot in (current, current - 1)
        )


def sign_store_proof(identity: Identity, token: bytes, receiver_key: bytes) -> bytes:
    """The sender's answer to the token ``receiver_key`` handed it."""
    return identity.sign(STORE_PROOF_CONTEXT + token + receiver_key)


def store_proof_valid(sender_key: bytes, proof: bytes, token: bytes, receiver_key: bytes) -> bool:
    return verify_signature(sender_key, STORE_PROOF_CONTEXT + token + receiver_key, proof)


def _receipt_data(
    request_id: bytes, requester_key: bytes, key: bytes, record: bytes, status: int
) -> bytes:
    return RECEIPT_CONTEXT + request_id + requester_key + key + bytes((status,)) + record


def sign_receipt(
    identity: Identity,
    request_id: bytes,
    requester_key: bytes,
    key: bytes,
    record: bytes,
    status: int,
) -> bytes:
    """The storing node's signature that it answered ``status`` to this STORE."""
    return identity.sign(_receipt_data(request_id, requester_key, key, record, status))


def receipt_valid(
    storer_key: bytes,
    receipt: bytes,
    request_id: bytes,
    requester_key: bytes,
    key: bytes,
    record: bytes,
    status: int,
) -> bool:
    data = _receipt_data(request_id, requester_key, key, record, status)
    return verify_signature(storer_key, data, receipt)


class HeldTokens:
    """Tokens other nodes handed us, by address: the putting side of a proof.

    Bounded (``max_entries``, oldest forgotten); a token is used for at most
    ``TOKEN_USE_WITHIN`` seconds, and only towards the key that issued it.
    """

    def __init__(self, identity: Identity, *, max_entries: int) -> None:
        self.identity = identity
        self.max_entries = max_entries
        # address -> (issuer key, token, when received, our proof once signed,
        #             whether the issuer said it holds us proven at our address)
        self._held: OrderedDict[Address, tuple[bytes, bytes, float, bytes, bool]] = OrderedDict()

    def remember(
        self,
        address: Address,
        issuer_key: bytes,
        token: bytes,
        now: float,
        *,
        proven_there: bool = False,
    ) -> None:
        """Keep ``token``; ``proven_there``: the issuer's reply said we are proven there
        (``Flags.PROVEN_YOU``), so a STORE to it needs no proof (saves a signature per
        storer; if it forgot us meanwhile, its ``UNPROVEN`` answer costs one round trip)."""
        held = self._held.get(address)
        proof = b""
        if held is not None and held[0] == issuer_key and held[1] == token:
            proof = held[3]  # the same token again (same slot): it is fresh from now on
        self._held[address] = (issuer_key, token, now, proof, proven_there)
        self._held.move_to_end(address)
        if len(self._held) > self.max_entries:
            self._held.popitem(last=False)

    def prove(
        self, store: Store, address: Address, expected_key: bytes | None, now: float
    ) -> Store:
        """``store`` with our proof attached, if we hold a fresh token from the node there."""
        held = self._held.get(address)
        if store.proof or held is None:
            return store
        issuer_key, token, received_at, proof, proven_there = held
        if now - received_at > TOKEN_USE_WITHIN:
            return store
        if expected_key is not None and expected_key != issuer_key:
            return store  # the token came from another key at that address
        if proven_there:
            return store  # it holds us proven: no signature to spend
        if not proof:
            proof = sign_store_proof(self.identity, token, issuer_key)
            self._held[address] = (issuer_key, token, received_at, proof, False)
        return Store(store.key, store.record, token, proof)

    def cookie_for(self, address: Address, expected_key: bytes | None, now: float) -> bytes:
        """The token to echo in a request to ``address`` (``Frame.cookie``), or b"" if none.

        Only a fresh token, and only towards the key that issued it: echoing it
        proves we receive at our address, so the node may answer in full.
        """
        held = self._held.get(address)
        if held is None or now - held[2] > TOKEN_USE_WITHIN:
            return b""
        if expected_key is not None and expected_key != held[0]:
            return b""
        return held[1]

    def __len__(self) -> int:
        return len(self._held)

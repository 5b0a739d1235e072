"""Sealed envelopes: confidential to the recipient, signed by the sender, replay-checkable.

Wire form (what a home supernode sees and forwards)::

    recipient_key(32) || sealed_box(inner)

``sealed_box`` is libsodium's ``crypto_box_seal`` to the X25519 key derived
from the recipient's Ed25519 key (an ephemeral sender key and a 16-byte MAC,
48 bytes of overhead). The inner part is one msgpack array::

    [version=1, sender_key(bin 32), envelope_id(bin 16), timestamp_ms, channel(str),
     payload(bin), signature(bin 64)]

and the signature is the sender's Ed25519 signature over ``SIGNING_CONTEXT``,
the recipient key, the envelope id, the timestamp, the channel and the payload.
The channel (at most ``MAX_CHANNEL_BYTES`` of ASCII: "link", "chat", "call"...)
says which service on the recipient the payload is for. So:

- a home learns only the recipient key (it must, to forward), the size and the
  address the envelope came from, never the sender's identity or the payload;
- any change to the sealed bytes fails the MAC; a recipient cannot present a
  signed payload as sent to someone else (the signature names the recipient);
- the id and timestamp feed the receiver's ``ReplayWindow`` (``replay.py``),
  which refuses a second delivery of the same envelope.

Invariants: ``decode_inner`` and ``open_envelope`` are total (a value or
``EnvelopeDecodeError``); the payload is bounded by ``MAX_PAYLOAD_BYTES``
(PeerLink's largest signal: an SDP offer with audio, video and candidates is
4-6 KB, at most 16 KiB) and a whole envelope by ``MAX_ENVELOPE_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import nacl.exceptions
import nacl.public
import nacl.signing

from p2pnode.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, verify_signature

__all__ = [
    "ENVELOPE_ID_BYTES",
    "MAX_CHANNEL_BYTES",
    "MAX_ENVELOPE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "EnvelopeDecodeError",
    "OpenedEnvelope",
    "decode_inner",
    "envelope_recipient",
    "open_envelope",
    "seal_envelope",
]

INNER_VERSION = 1
ENVELOPE_ID_BYTES = 16
MAX_PAYLOAD_BYTES = 16 * 1024 + 128  # PeerLink's largest signal (link_signal.MAX_SIGNAL_BYTES)
SEALED_OVERHEAD = 48  # crypto_box_seal: ephemeral public key (32) + MAC (16)
_INNER_OVERHEAD = 160  # msgpack framing, keys, id, timestamp, signature (measured: < 140)
MAX_ENVELOPE_BYTES = PUBLIC_KEY_BYTES + SEALED_OVERHEAD + _INNER_OVERHEAD + MAX_PAYLOAD_BYTES
MAX_TIMESTAMP_MS = 2**50
MAX_CHANNEL_BYTES = 16
SIGNING_CONTEXT = b"p2pnode-envelope-v1\x00"


class EnvelopeDecodeError(ValueError):
    """Bytes that are not an envelope this node can open and verify."""


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """What the recipient learns: an authenticated sender and its payload."""

    sender: bytes  # the sender's Ed25519 public key (its signature verified)
    envelope_id: bytes
    timestamp_ms: int
    payload: bytes
    channel: str = ""


def _signed_bytes(
    recipient: bytes, envelope_id: bytes, timestamp_ms: int, channel: str, payload: bytes
) -> bytes:
    tag = channel.encode("ascii")
    return b"".join(
        (
            SIGNING_CONTEXT,
            recipient,
            envelope_id,
            timestamp_ms.to_bytes(8, "big"),
            len(tag).to_bytes(1, "big"),
            tag,
            payload,
        )
    )


def _check_channel(channel: str) -> str:
    if not channel.isascii() or len(channel) > MAX_CHANNEL_BYTES:
        raise ValueError(f"a channel is at most {MAX_CHANNEL_BYTES} ASCII characters")
    return channel


def _curve_public(ed25519_key: bytes) -> nacl.public.PublicKey:
    try:
        return nacl.signing.VerifyKey(ed25519_key).to_curve25519_public_key()
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise ValueError("not an Ed25519 public key") from None


def seal_envelope(
    sender: Identity,
    recipient: bytes,
    payload: bytes,
    *,
    envelope_id: bytes,
    now: float,
    channel: str = "",
) -> bytes:
    """Seal ``payload`` from ``sender`` to the key ``recipient``, for its service
    ``channel``; ``envelope_id`` must be fresh random bytes (the caller passes randomness
    in, as every core here does)."""
    _check_channel(channel)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    if len(envelope_id) != ENVELOPE_ID_BYTES:
        raise ValueError(f"envelope id must be {ENVELOPE_ID_BYTES} bytes")
    if len(recipient) != PUBLIC_KEY_BYTES:
        raise ValueError(f"recipient key must be {PUBLIC_KEY_BYTES} bytes")
    timestamp_ms = int(now * 1000)
    signature = sender.sign(_signed_bytes(recipient, envelope_id, timestamp_ms, channel, payload))
    inner: bytes = msgpack.packb(
        [INNER_VERSION, sender.public_key, envelope_id, timestamp_ms, channel, payload, signature],
        use_bin_type=True,
    )
    sealed = nacl.public.SealedBox(_curve_public(recipient)).encrypt(inner)
    return recipient + bytes(sealed)


def envelope_recipient(envelope: bytes) -> bytes:
    """The recipient key a home forwards on; ``EnvelopeDecodeError`` if it cannot be one."""
    if not PUBLIC_KEY_BYTES + SEALED_OVERHEAD < len(envelope) <= MAX_ENVELOPE_BYTES:
        raise EnvelopeDecodeError("envelope size out of bounds")
    return envelope[:PUBLIC_KEY_BYTES]


def decode_inner(data: bytes, recipient: bytes) -> OpenedEnvelope:
    """The unsealed inner array, its signature checked. Total."""
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=7,
            max_map_len=0,
            max_str_len=MAX_CHANNEL_BYTES,
            max_bin_len=MAX_PAYLOAD_BYTES,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises a zoo of types; all mean "not ours"
        raise EnvelopeDecodeError(f"inner part is not msgpack: {type(error).__name__}") from None
    if type(fields) is not list or len(fields) != 7:
        raise EnvelopeDecodeError("inner part is not an array of 7 fields")
    version, sender, envelope_id, timestamp_ms, channel, payload, signature = fields
    if type(version) is not int or version != INNER_VERSION:
        raise EnvelopeDecodeError("unsupported envelope version")
    if type(sender) is not bytes or len(sender) != PUBLIC_KEY_BYTES:
        raise EnvelopeDecodeError("sender key is not 32 bytes")
    if type(envelope_id) is not bytes or len(envelope_id) != ENVELOPE_ID_BYTES:
        raise EnvelopeDecodeError("envelope id is not 16 bytes")
    if type(timestamp_ms) is not int or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise EnvelopeDecodeError("timestamp out of range")
    if type(channel) is not str or not channel.isascii():
        raise EnvelopeDecodeError("channel is not an ASCII string")
    if type(payload) is not bytes:
        raise EnvelopeDecodeError("payload is not binary")
    if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
        raise EnvelopeDecodeError("signature is not 64 bytes")
    if not verify_signature(
        sender, _signed_bytes(recipient, envelope_id, timestamp_ms, channel, payload), signature
    ):
        raise EnvelopeDecodeError("the sender's signature does not verify")
    return OpenedEnvelope(sender, envelope_id, timestamp_ms, payload, channel)


def open_envelope(
    envelope: bytes, recipient: Identity, key: nacl.public.PrivateKey | None = None
) -> OpenedEnvelope:
    """Unseal and verify an envelope addressed to ``recipient``. Total: the opened
    envelope or ``EnvelopeDecodeError``. Pass ``key`` (``recipient.x25519_private_key()``)
    to skip the key conversion per envelope. Replay is the caller's check (``replay.py``)."""
    if envelope_recipient(envelope) != recipient.public_key:
        raise EnvelopeDecodeError("addressed to another key")
    box = nacl.public.SealedBox(key or recipient.x25519_private_key())
    try:
        inner = box.decrypt(envelope[PUBLIC_KEY_BYTES:])
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise EnvelopeDecodeError("does not open with our key (altered or not for us)") from None
    return decode_inner(inner, recipient.public_key)

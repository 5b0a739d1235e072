"""The signalling payload of a PeerLink: offer or answer, link id, SDP (msgpack, total decoder).

Why its own module: the signalling layer (sealed envelopes through home
supernodes) carries these bytes opaquely; a dispatcher that serves several
links routes them by ``link_id`` without knowing anything about WebRTC, and the
decoder is fuzzed on its own.

Wire form: msgpack ``[version=1, kind(0 offer, 1 answer), link_id(bin 16), sdp(str)]``,
the SDP at most ``MAX_SDP_BYTES``. Invariant: ``decode_signal`` is total (any
bytes give a ``SignalMessage`` or ``SignalDecodeError``), ``encode_signal`` is
its inverse.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import msgpack

__all__ = [
    "LINK_ID_BYTES",
    "MAX_SDP_BYTES",
    "MAX_SIGNAL_BYTES",
    "SignalDecodeError",
    "SignalDelivery",
    "SignalKind",
    "SignalMessage",
    "SignalTransport",
    "decode_signal",
    "encode_signal",
]

SIGNAL_VERSION = 1
LINK_ID_BYTES = 16
MAX_SDP_BYTES = 16 * 1024  # an offer with audio, video, data and ~20 candidates is ~4-6 KB
MAX_SIGNAL_BYTES = MAX_SDP_BYTES + 64


class SignalDecodeError(ValueError):
    """A signalling payload is not a well-formed PeerLink message."""


class SignalKind(enum.IntEnum):
    OFFER = 0
    ANSWER = 1


@dataclass(frozen=True, slots=True)
class SignalMessage:
    """One offer or answer: which link (random id chosen by the offerer) and its SDP."""

    kind: SignalKind
    link_id: bytes
    sdp: str

    def __post_init__(self) -> None:
        if len(self.link_id) != LINK_ID_BYTES:
            raise ValueError(f"link id must be {LINK_ID_BYTES} bytes")
        if len(self.sdp.encode("utf-8")) > MAX_SDP_BYTES:
            raise ValueError(f"SDP longer than {MAX_SDP_BYTES} bytes")


def encode_signal(message: SignalMessage) -> bytes:
    """Wire form: msgpack ``[version, kind, link_id(bin 16), sdp(str)]``."""
    packed: bytes = msgpack.packb(
        [SIGNAL_VERSION, int(message.kind), message.link_id, message.sdp], use_bin_type=True
    )
    return packed


def decode_signal(data: bytes) -> SignalMessage:
    """Total: any bytes give a ``SignalMessage`` or ``SignalDecodeError``."""
    if len(data) > MAX_SIGNAL_BYTES:
        raise SignalDecodeError("signal too long")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            max_array_len=4,
            max_map_len=0,
            max_str_len=MAX_SDP_BYTES,
            max_bin_len=LINK_ID_BYTES,
            max_ext_len=0,
        )
    except Exception:  # msgpack raises many types on garbage: all mean "not a signal"
        raise SignalDecodeError("not msgpack") from None
    if not isinstance(fields, list) or len(fields) != 4:
        raise SignalDecodeError("expected a 4-element array")
    version, kind, link_id, sdp = fields
    if version != SIGNAL_VERSION or type(version) is not int:
        raise SignalDecodeError("unknown version")
    if type(kind) is not int or kind not in (SignalKind.OFFER, SignalKind.ANSWER):
        raise SignalDecodeError("unknown kind")
    if not isinstance(link_id, bytes) or len(link_id) != LINK_ID_BYTES:
        raise SignalDecodeError("bad link id")
    if not isinstance(sdp, str) or len(sdp.encode("utf-8")) > MAX_SDP_BYTES:
        raise SignalDecodeError("bad sdp")
    return SignalMessage(SignalKind(kind), link_id, sdp)


@dataclass(frozen=True, slots=True)
class SignalDelivery:
    """A payload as the signalling delivered it: ``sender`` is authenticated by it."""

    sender: str  # the sender's peer id
    payload: bytes


class SignalTransport(Protocol):
    """What PeerLink needs of signalling: send to a peer id, receive with the sender proven.

    The real one is ``connectivity.signalling`` (sealed envelopes through the
    recipient's home supernode); tests use an in-memory pair or a pipe.
    ``receive`` yields deliveries for this link's use; a dispatcher that serves
    several links routes them by ``decode_signal(...).link_id``.
    """

    async def send(self, peer: str, payload: bytes) -> None: ...

    async def receive(self) -> SignalDelivery: ...

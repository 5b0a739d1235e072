"""Call signalling messages: invite, ringing, answer, decline, busy, cancel, hangup.

These ride inside the sealed, authenticated envelopes of the connectivity
layer, so the sender's peer id is known and is not repeated here. A message
names its call (16 random bytes chosen by the caller) and carries SDP where the
kind needs one (INVITE, ANSWER and the mid-call REOFFER/REANSWER used to move
a call onto another path). ``generation`` counts media re-negotiations so a
late answer to an older offer is recognised and dropped.

Wire format: a msgpack array ``[version, kind, call_id, generation, sdp,
reason]`` with ``nil`` for the absent fields. The decoder is total: any bytes
give a ``CallSignal`` or one ``CallSignalDecodeError`` naming the reason, never
an attacker's value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

__all__ = [
    "CALL_ID_BYTES",
    "MAX_GENERATION",
    "MAX_SDP_BYTES",
    "MAX_SIGNAL_BYTES",
    "SIGNAL_VERSION",
    "CallSignal",
    "CallSignalDecodeError",
    "DeclineReason",
    "SignalKind",
    "decode_signal",
    "encode_signal",
]

SIGNAL_VERSION = 1
CALL_ID_BYTES = 16
MAX_SDP_BYTES = 16 * 1024  # aiortc's audio+video offer with relay candidates is ~3 KB
MAX_SIGNAL_BYTES = MAX_SDP_BYTES + 256
MAX_GENERATION = 0xFFFF


class SignalKind(enum.IntEnum):
    INVITE = 1
    RINGING = 2
    ANSWER = 3
    DECLINE = 4
    BUSY = 5
    CANCEL = 6
    HANGUP = 7
    REOFFER = 8  # mid-call: the caller moves the media to a new path
    REANSWER = 9


class DeclineReason(enum.IntEnum):
    DECLINED = 1  # the user said no
    NO_ANSWER = 2  # the callee's device rang out
    REFUSED = 3  # policy: calls from non-contacts are refused


_WITH_SDP = frozenset(
    {SignalKind.INVITE, SignalKind.ANSWER, SignalKind.REOFFER, SignalKind.REANSWER}
)


class CallSignalDecodeError(ValueError):
    """Bytes that are not a valid call signal; the message says why, never what."""


@dataclass(frozen=True, slots=True)
class CallSignal:
    kind: SignalKind
    call_id: bytes
    generation: int = 0
    sdp: str | None = None
    reason: DeclineReason | None = None

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise ValueError(problem)


def _problem(signal: CallSignal) -> str | None:
    if len(signal.call_id) != CALL_ID_BYTES:
        return "call id must be 16 bytes"
    if not 0 <= signal.generation <= MAX_GENERATION:
        return "generation out of range"
    if (signal.sdp is not None) != (signal.kind in _WITH_SDP):
        return "sdp present on a kind without sdp, or missing"
    if signal.sdp is not None and len(signal.sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        return "sdp too long"
    if (signal.reason is not None) != (signal.kind is SignalKind.DECLINE):
        return "reason only and always on decline"
    return None


def encode_signal(signal: CallSignal) -> bytes:
    packed: bytes = msgpack.packb(
        [
            SIGNAL_VERSION,
            int(signal.kind),
            signal.call_id,
            signal.generation,
            signal.sdp,
            None if signal.reason is None else int(signal.reason),
        ],
        use_bin_type=True,
    )
    return packed


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CallSignalDecodeError(f"{what} is not an integer")
    return value


def decode_signal(data: bytes) -> CallSignal:
    """Decode one signal; raises ``CallSignalDecodeError`` and nothing else."""
    if len(data) > MAX_SIGNAL_BYTES:
        raise CallSignalDecodeError("signal too long")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_SDP_BYTES,
            max_bin_len=CALL_ID_BYTES,
            max_array_len=8,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises many types for bad input
        raise CallSignalDecodeError("not a msgpack signal") from error
    if not isinstance(fields, list) or len(fields) != 6:
        raise CallSignalDecodeError("not a six-field array")
    version, kind, call_id, generation, sdp, reason = fields
    if _int(version, "version") != SIGNAL_VERSION:
        raise CallSignalDecodeError("unsupported version")
    kind_number = _int(kind, "kind")
    try:
        signal_kind = SignalKind(kind_number)
    except ValueError as error:
        raise CallSignalDecodeError("unknown kind") from error
    if not isinstance(call_id, bytes):
        raise CallSignalDecodeError("call id is not bytes")
    if sdp is not None and not isinstance(sdp, str):
        raise CallSignalDecodeError("sdp is not text")
    decline_reason: DeclineReason | None = None
    if reason is not None:
        reason_number = _int(reason, "reason")
        try:
            decline_reason = DeclineReason(reason_number)
        except ValueError as error:
            raise CallSignalDecodeError("unknown decline reason") from error
    try:
        return CallSignal(signal_kind, call_id, _int(generation, "generation"), sdp, decline_reason)
    except ValueError as error:
        if isinstance(error, CallSignalDecodeError):
            raise
        raise CallSignalDecodeError(str(error)) from error
